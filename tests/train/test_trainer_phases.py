"""Phase hooks of the training loop: start_phase before the first epoch, end_phase once after the
last one (also when the run was resumed inside the phase), zero-epoch phases keep their index."""

from __future__ import annotations

import torch

from cdrbench.methods.base import Method, Phase
from cdrbench.train.trainer import LAST, Trainer, load_checkpoint


class _Recorder(Method):
    def __init__(self, pretrain_epochs: int):
        super().__init__()
        self.pretrain_epochs = pretrain_epochs
        self.calls: list = []
        self.w = torch.nn.Linear(1, 1)

    def setup(self, data, device, seed):
        pass

    def phases(self):
        return [Phase("pretrain", max_epochs=self.pretrain_epochs, select=False), Phase("tune", max_epochs=2, select=False)]

    def start_phase(self, phase):
        self.calls.append(("start", phase.name))

    def end_phase(self, phase):
        self.calls.append(("end", phase.name))

    def train_epoch(self, phase, epoch, progress):
        self.calls.append((phase.name, epoch))
        return {}

    def modules(self):
        return [self.w]

    def state_dict(self):
        return {"w": self.w.state_dict()}

    def load_state_dict(self, state):
        self.w.load_state_dict(state["w"])


def _trainer(method, run_dir):
    return Trainer(method, evaluator=None, run_dir=run_dir, max_epochs=5, log=lambda _: None)


def test_hooks_bracket_each_phase_and_a_zero_epoch_phase_still_runs_its_hooks(tmp_path):
    method = _Recorder(pretrain_epochs=2)
    _trainer(method, tmp_path).fit()
    assert method.calls == [("start", "pretrain"), ("pretrain", 0), ("pretrain", 1), ("end", "pretrain"),
                            ("start", "tune"), ("tune", 0), ("tune", 1), ("end", "tune")]
    cached = _Recorder(pretrain_epochs=0)  # e.g. pre-trained weights came from the artifact cache
    (tmp_path / "b").mkdir()
    _trainer(cached, tmp_path / "b").fit()
    assert cached.calls == [("start", "pretrain"), ("end", "pretrain"), ("start", "tune"), ("tune", 0), ("tune", 1), ("end", "tune")]


def test_end_phase_runs_after_a_resume_inside_the_phase(tmp_path):
    method = _Recorder(pretrain_epochs=3)
    original = method.train_epoch

    def crash(phase, epoch, progress):
        if (phase.name, epoch) == ("pretrain", 2):
            raise KeyboardInterrupt
        return original(phase, epoch, progress)

    method.train_epoch = crash
    try:
        _trainer(method, tmp_path).fit()
    except KeyboardInterrupt:
        pass
    resumed = _Recorder(pretrain_epochs=3)
    trainer = _trainer(resumed, tmp_path)
    trainer.restore(load_checkpoint(tmp_path / LAST))
    trainer.fit()
    assert resumed.calls == [("pretrain", 2), ("end", "pretrain"), ("start", "tune"), ("tune", 0), ("tune", 1), ("end", "tune")]


def test_a_method_can_end_a_phase_on_its_own_criterion(tmp_path):
    """Method.phase_finished ends an unselected phase early (EMCDR's source-holdout stop); the
    next phase still runs in full."""

    class StopsPretrainAfterTwo(_Recorder):
        def phase_finished(self, phase):
            return phase.name == "pretrain" and self.calls[-1] == ("pretrain", 1)

    method = StopsPretrainAfterTwo(pretrain_epochs=5)
    _trainer(method, tmp_path).fit()
    assert method.calls == [("start", "pretrain"), ("pretrain", 0), ("pretrain", 1), ("end", "pretrain"),
                            ("start", "tune"), ("tune", 0), ("tune", 1), ("end", "tune")]
