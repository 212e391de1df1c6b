"""Cross-domain baselines of the papers' tables (spec: ``shared/design/baselines.md``).

One module per method: :mod:`.cmf` (CMF), :mod:`.emcdr` (EMCDR), :mod:`.conet` (CoNet),
:mod:`.bitgcf` (BiTGCF), :mod:`.xsimgcl` (XSimGCL, single-domain); :mod:`.common` holds what they
share (training-row views, pointwise batches with a cycling source, RecBole's initialisation).
Each module's docstring names the reference lines and where the paper and the code differ; every
such difference is a flag in ``conf/method/<name>.yaml`` switched by ``method.profile``.
"""
