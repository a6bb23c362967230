"""--resume: the run state's records survive a kill at any instant and count the budget spent;
fine-tuning resumed from a saved state continues exactly as if never stopped; and a real
`online` process killed with SIGKILL mid-fine-tune leaves complete predictions, then resumes
with only the budget it had left and never replaces the best model by a worse one."""

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest

from test_finetune import BATCH, NUM_CLASSES, _data, _tiny_model
from test_sigterm import _argv, _assert_complete_predictions, _env, _kill
from timebox.data.synthetic import make_synthetic
from timebox.errors import UsageError
from timebox.recovery import RunState
from timebox.train.finetune import RecoveryState, ScoreEpoch, fine_tune


# --- RunState ---------------------------------------------------------------------------------

def _begin(folder, identity, resume, start):
    """One session's begin, its heartbeat stopped at once (the test sets the heartbeat times)."""
    state = RunState(folder)
    spent = state.begin(identity, resume, start)
    state.close()
    return spent


def _stamp(path, t):
    os.utime(path, (t, t))


def test_new_run_clears_the_state_and_has_spent_nothing(tmp_path):
    RunState(tmp_path / "state").write("head", {"epochs": 3})
    assert _begin(tmp_path / "state", {"budget_s": 60}, resume=False, start=time.time()) == 0.0
    assert RunState(tmp_path / "state").read("head") is None


def test_resume_counts_the_budget_each_session_spent_until_its_last_heartbeat(tmp_path):
    folder = tmp_path / "state"
    t0 = time.time() - 100.0
    _begin(folder, {"budget_s": 300}, resume=False, start=t0)
    time.sleep(0.05)
    _stamp(folder / "heartbeat-0", t0 + 40.0)  # the first session died 40 s after its start
    t1 = time.time()
    assert _begin(folder, {"budget_s": 300}, resume=True, start=t1) == pytest.approx(41.0)  # + 1 s of doubt
    _stamp(folder / "heartbeat-1", t1 + 9.0)  # the second one 9 s after its start
    assert _begin(folder, {"budget_s": 300}, resume=True, start=time.time()) == pytest.approx(41.0 + 10.0)


def test_resume_with_other_arguments_is_refused_naming_them(tmp_path):
    _begin(tmp_path / "state", {"budget_s": 300, "seed": 0}, resume=False, start=time.time())
    with pytest.raises(UsageError, match="budget_s=300"):
        _begin(tmp_path / "state", {"budget_s": 600, "seed": 0}, resume=True, start=time.time())


def test_resume_without_state_starts_a_new_run(tmp_path):
    assert _begin(tmp_path / "state", {"budget_s": 60}, resume=True, start=time.time()) == 0.0


def test_a_record_half_written_by_a_killed_run_leaves_the_previous_one_readable(tmp_path):
    state = RunState(tmp_path)
    model = _tiny_model()
    state.write("finetune", {"epoch": 1}, weights=model, arrays={"v": np.arange(3)})
    # killed after writing generation 2's files, before its JSON replaced generation 1's
    (tmp_path / "finetune-2.weights.h5").write_bytes(b"truncated")
    (tmp_path / "finetune-2.npz").write_bytes(b"")
    record = state.read("finetune")
    assert record["info"] == {"epoch": 1}
    np.testing.assert_array_equal(record["arrays"]["v"], np.arange(3))
    _tiny_model(seed=1).load_weights(record["weights"])  # loadable


def test_a_new_generation_replaces_the_files_of_the_old_one(tmp_path):
    state = RunState(tmp_path)
    state.write("finetune", {"epoch": 1}, weights=_tiny_model(), arrays={"v": np.zeros(2)})
    state.write("finetune", {"epoch": 2}, weights=_tiny_model(), arrays={"v": np.ones(2)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["finetune-2.npz", "finetune-2.weights.h5", "finetune.json"]
    assert state.read("finetune")["info"] == {"epoch": 2}


# --- fine_tune continued from a saved state ------------------------------------------------------

def test_fine_tune_resumed_from_a_state_ends_with_the_same_weights_as_an_uninterrupted_run(tmp_path):
    views, y = _data()
    kw = dict(num_classes=NUM_CLASSES, time_s=1e6, eval_s=0.0, batch_size=BATCH,
              max_epochs=6, seed=3)
    whole = _tiny_model()
    fine_tune(whole, views, y, **kw)

    first = _tiny_model()
    states = []

    def stop_after_two(epoch, step):
        if epoch == 2:
            first.save_weights(str(tmp_path / "e2.weights.h5"))

    fine_tune(first, views, y, callbacks=[ScoreEpoch(stop_after_two), RecoveryState(states.append)], **kw)
    at_two = states[1]
    assert (at_two.epoch, at_two.epochs_planned) == (2, 6)

    resumed = _tiny_model(seed=9)  # a fresh process: other initial weights, then the saved ones
    resumed.load_weights(str(tmp_path / "e2.weights.h5"))
    seen = []
    result = fine_tune(resumed, views, y, callbacks=[ScoreEpoch(lambda e, s: seen.append((e, s)))], resume=at_two,
                       **kw)
    assert [e for e, _ in seen] == [3, 4, 5, 6] and result.epochs_run == 6
    assert seen[0][1] == at_two.step + int(np.ceil(len(y) / BATCH))  # the step count goes on
    for a, b in zip(whole.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# --- a real process killed with SIGKILL, then resumed ---------------------------------------------

def test_sigkill_mid_fine_tune_then_resume_uses_only_the_budget_left(tmp_path):
    root = make_synthetic(tmp_path / "data", n_per_class=24, n_test_per_class=4, size=64)
    out = tmp_path / "out"
    budget_s = 100.0
    start = time.time()
    proc = subprocess.Popen(_argv(root, out, "100s"), env=_env(tmp_path, timebox_start=start),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + budget_s
        while not (out / "state" / "finetune.json").exists():  # at least one fine-tune epoch saved
            assert proc.poll() is None, f"exited {proc.returncode} before a fine-tune epoch was saved"
            assert time.monotonic() < deadline, "no fine-tune epoch saved within the budget"
            time.sleep(0.05)
        time.sleep(1.0)
        proc.send_signal(signal.SIGKILL)
        killed_at = time.time()
        proc.wait()
    finally:
        _kill(proc)
    _assert_complete_predictions(out, root)  # the kill leaves a complete, valid output
    best_before = json.loads((out / "state" / "best.json").read_text())["info"]["val_accuracy"]

    resume_start = time.time()
    argv = _argv(root, out, "100s") + ["--resume"]
    done = subprocess.run(argv, env=_env(tmp_path, timebox_start=resume_start), capture_output=True, text=True,
                          timeout=budget_s + 60)
    resume_wall = time.time() - resume_start
    assert done.returncode == 0, done.stdout + done.stderr
    assert "fine-tuning resumed after epoch" in done.stderr
    _assert_complete_predictions(out, root)
    summary = json.loads((out / "report" / "summary.json").read_text())
    spent_before = killed_at - start
    assert summary["spent_by_earlier_sessions_s"] == pytest.approx(spent_before, abs=2.5)
    assert spent_before + resume_wall <= budget_s + 3.0, f"{spent_before:.1f}s + {resume_wall:.1f}s"
    assert summary["wall_s"] <= budget_s
    assert json.loads((out / "state" / "best.json").read_text())["info"]["val_accuracy"] >= best_before
    assert summary["val_accuracy"] >= best_before  # the model saved is the best, never a worse one
