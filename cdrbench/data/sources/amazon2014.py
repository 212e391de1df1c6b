"""Amazon 2014 review data (McAuley et al.): the 5-core review files used by BiGNAS."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pandas as pd

from cdrbench.data.sources._io import read_json_lines, require_file
from cdrbench.data.sources.base import CategoryFile, tidy_frame

URL_BASE = "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/"
PAGE = "http://jmcauley.ucsd.edu/data/amazon/"

#: JSON key -> kind; the four fields every Amazon review reader keeps
REVIEW_FIELDS = [
    ("reviewerID", "str"),
    ("asin", "str"),
    ("overall", "num"),
    ("unixReviewTime", "num"),
]


def read_reviews(path: Path, domain: str) -> pd.DataFrame:
    """Tidy table of an Amazon review JSON-lines file (2014 or 2018 schema, plain or gzip).

    ``reviewerID`` -> user, ``asin`` -> item, ``overall`` -> rating, ``unixReviewTime`` -> ts;
    every other key is ignored. Each non-blank line must be a strict JSON object holding the
    four keys (strings / numbers; ``NaN``/``Infinity`` are rejected); otherwise
    :class:`~cdrbench.errors.DataFormatError` names the file and the 1-based line number.

    The file is parsed as a stream with pyarrow's JSON reader (explicit four-field schema,
    other fields ignored), so memory is bounded by the four output columns. Measured on the
    Digital Music prefix repeated 10x (69,080 reviews, 96.4 MB of JSON, 41 MB gzip), 2-core
    shared CPU, best of 3-5 runs: gzip 0.40-0.57 s = 120k-170k reviews/s = 170-240 MB/s of
    decompressed JSON (gzip inflation is about half of it); plain text 0.20-0.28 s = 245k-340k
    reviews/s = 340-470 MB/s. A ``json.loads`` line loop over the same file ran at 55k
    reviews/s (75 MB/s) gzip, 113k (158 MB/s) plain. The single-file prefix itself (6,908
    reviews, 9.6 MB) reads in ~0.07 s. The line loop is kept as the strict fallback that names
    the offending line when the fast path rejects a file.
    """
    cols = read_json_lines(path, REVIEW_FIELDS)
    return tidy_frame(cols["reviewerID"], cols["asin"], cols["overall"], cols["unixReviewTime"], domain)


class Amazon2014Reviews(CategoryFile):
    """``<folder>/reviews_<category>_5.json.gz`` from the Amazon 2014 release.

    ``category`` is the file's category part, e.g. ``Books``, ``CDs_and_Vinyl``,
    ``Home_and_Kitchen``. ``filename`` overrides the file name (a renamed or sample file); the
    official URL is then not offered for download, since it would not be that file.
    """

    prefix = "reviews_"
    suffix = "_5.json.gz"
    url_base = URL_BASE
    page = PAGE

    def __init__(self, category: str, folder: str = "amazon2014", filename: Optional[str] = None):
        super().__init__(category, folder, filename)

    def read(self, root: Path) -> pd.DataFrame:
        raw = self.raw_file()
        path = require_file(Path(root) / raw.relpath, raw)
        return read_reviews(path, self.domain)
