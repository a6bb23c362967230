"""`tune` (offline_tuning/): the subsample, the space file's errors, the halving schedule, and whole searches
with a stand-in trial program (tests/fake_online.py): Optuna and its journal storage are real."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from offline_tuning.cli import build_parser, main as tune_main
from offline_tuning.schedule import (DEFAULTS_KEY, DONE, WAIT, Job, Rung, TrialView, next_job, plan, plan_to, promoted,
                                     ranking)
from offline_tuning.leaderboard import Leaderboard
from offline_tuning.space import read_space
from offline_tuning.study import open_study
from offline_tuning.subsample import Subsample, draw_subsample
from offline_tuning.trial import TrialSpec, run_trial
from pg import postgres_url  # noqa: F401
from timebox.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
TRASHNET = ROOT.parent / "shared" / "datasets" / "trashnet" / "train_data"
FAKE = f"{sys.executable} {ROOT / 'tests' / 'fake_online.py'}"


@pytest.mark.parametrize("total_s, first_s, rungs", [
    (585, 20, [(20, 15, 1), (60, 2, 2)]),          # 10 minutes: 15+ short trials, the top two at 3x, 2 seeds
    (1780, 60, [(60, 16, 1), (180, 2, 2)]),
    (3000, 20, [(20, 86, 1), (60, 6, 1), (180, 2, 2)]),
    (525, 30, [(30, 12, 1), (30, 2, 2)]),          # no room for 90 s: the best two rerun at 30 s with 2 seeds
    (100, 20, [(20, 4, 1)]),                       # too short for a second rung
])
def test_plan_keeps_eta_times_the_configurations_below_each_rung(total_s, first_s, rungs):
    assert [(r.budget_s, r.configs, r.seeds) for r in plan(total_s, first_s, 2).rungs] == rungs


@pytest.mark.parametrize("top_s, total_s, rungs", [
    (480 / 3453 * 1000, 1720, [(46.3, 23, 1), (139.0, 2, 2)]),  # 8 min on 3,453 images, tuned on 1,000
    (540, 7200, [(60, 62, 1), (180, 6, 1), (540, 2, 2)]),       # two hours: three rungs up to 540 s
    (1800, 1720, None),  # a judge's 3 h on 6,000 images, tuned on 1,000: 1,800 s a trial does not fit 30 min
    (60, 1720, None),    # 60 s / 3 is under the 30 s floor: no second rung
])
def test_plan_to_a_target_puts_its_seconds_per_image_on_the_top_rung(top_s, total_s, rungs):
    s = plan_to(top_s, total_s, floor_s=30, overhead_s=3)
    assert (s and [(r.budget_s, r.configs, r.seeds) for r in s.rungs]) == rungs


def test_target_is_budget_and_images_and_excludes_min_trial():
    assert build_parser().parse_args(["--data", "d", "--budget", "30m", "--out", "o", "--target", "8m:3453"]
                                     ).target == (480.0, 3453)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--data", "d", "--budget", "30m", "--out", "o", "--target", "8m"])
    assert tune_main(["--data", "d", "--budget", "30m", "--out", "o", "--target", "3h:6000",
                      "--min-trial", "60s"]) == 2


def test_the_first_trial_is_the_defaults_and_promotions_wait_for_their_rung():
    s = plan(585, 20, 2)
    assert next_job(s, [], 500, seed=0) == Job(0, 20, DEFAULTS_KEY, 0)
    done = [TrialView(i, 0, f'{{"k": {i}}}', 0, "COMPLETE", 0.5 + i / 100) for i in range(6)]
    running = done + [TrialView(6, 0, '{"k": 6}', 0, "RUNNING")]
    assert next_job(s, running, 250, 0) == WAIT  # rung 0 is closed (no room beside rung 1) but not finished
    job = next_job(s, done, 250, 0)
    assert job == Job(1, 60, '{"k": 5}', 0)  # the best of rung 0, first seed
    taken = done + [TrialView(7, 1, '{"k": 5}', 0, "RUNNING")]
    assert next_job(s, taken, 200, 0) == Job(1, 60, '{"k": 5}', 1)  # ... then its second seed
    assert next_job(s, done, 10, 0) == DONE  # nothing fits


def test_rung_0_starts_nothing_once_a_later_rung_has_started():
    """Trials ending inside their budgets free time; a rung-0 trial started in it could outrank what rung 1 is
    rerunning and displace a promotion halfway (seen in bench/tune_value.py: the defaults lost their seat)."""
    s = plan(585, 20, 2)  # rung 1: 2 configurations x 2 seeds of 60 s
    done = [TrialView(i, 0, f'{{"k": {i}}}', 0, "COMPLETE", 0.5 + i / 100) for i in range(6)]
    half = done + [TrialView(6 + i, 1, '{"k": 5}', i, "COMPLETE", 0.6) for i in range(2)]
    assert next_job(s, half, 1000, 0) == Job(1, 60, '{"k": 4}', 0)  # not a new rung-0 trial, with room for one
    assert next_job(s, half + [TrialView(8 + i, 1, '{"k": 4}', i, "COMPLETE", 0.6) for i in range(2)],
                    1000, 0) == DONE


def test_the_defaults_are_promoted_beside_the_best_and_win_ties():
    s = plan(585, 20, 2)  # rung 1: 2 configurations x 2 seeds
    low = [TrialView(0, 0, DEFAULTS_KEY, 0, "COMPLETE", 0.40)]  # the defaults ranked last on rung 0
    done = low + [TrialView(i, 0, f'{{"k": {i}}}', 0, "COMPLETE", 0.5 + i / 100) for i in range(1, 6)]
    assert ranking(done, 0)[0][0] == '{"k": 5}'
    assert promoted(done, s.rungs[1]) == ['{"k": 5}', DEFAULTS_KEY]  # the second seat is the incumbent's
    top = [TrialView(10 + i, 1, c, i % 2, "COMPLETE", 0.7) for i, c in enumerate(['{"k": 5}'] * 2 + [DEFAULTS_KEY] * 2)]
    assert ranking(done + top, 1)[0][0] == DEFAULTS_KEY  # a tie at the top rung keeps the defaults
    alone = Rung(1, 60, 1, 2)  # one seat: the best alone
    assert promoted(done, alone) == ['{"k": 5}']


def test_the_leaderboard_names_the_winner_beside_the_defaults_on_its_rung(tmp_path):
    import optuna

    study = optuna.create_study(direction="maximize")
    for i, (config, value) in enumerate([(DEFAULTS_KEY, 0.70), ('{"k": 1}', 0.75), ('{"k": 1}', 0.77),
                                         (DEFAULTS_KEY, 0.72), (DEFAULTS_KEY, 0.74)]):
        study.add_trial(optuna.trial.create_trial(value=value, user_attrs={"rung": int(i > 0), "config": config,
                                                                            "seed": i % 2}))
    summary = Leaderboard(tmp_path, n_val=300).summary(study)
    assert summary.startswith('best: {"k": 1}, held-out accuracy 76.00%') and "the defaults 73.00% there" in summary


def test_a_trial_whose_worker_died_frees_its_slot():
    s = plan(585, 20, 2)
    died = [TrialView(0, 0, DEFAULTS_KEY, 0, "FAIL", retry=True)]
    assert next_job(s, died, 500, 0) == Job(0, 20, DEFAULTS_KEY, 0)


def test_space_errors_name_the_file_and_line(tmp_path):
    space = tmp_path / "space.toml"
    space.write_text("size = [192, 224]\nno_such_setting = [1]\n")
    with pytest.raises(UsageError, match=r"space.toml, line 2: 'no_such_setting' is not a setting"):
        read_space(space)
    space.write_text("# comment\nsize = [192, 8]\n")
    with pytest.raises(UsageError, match=r"line 2.*size is 8"):
        read_space(space)
    space.write_text("finetune_lr = { low = 1e-3, high = 1e-4 }\n")
    with pytest.raises(UsageError, match="below its high"):
        read_space(space)
    space.write_text("size = [\n")
    with pytest.raises(UsageError, match="not valid TOML"):
        read_space(space)
    assert [d.name for d in read_space(ROOT / "offline_tuning" / "space.toml").dimensions][:2] == ["backbone", "size"]


def test_subsample_is_stratified_seeded_and_reused(tmp_path):
    a = draw_subsample(TRASHNET, tmp_path / "a", 1000, 300, seed=0)
    assert len(a.val_labels) == 300 and sum(1 for _ in a.train.rglob("*.jpg")) == 1000
    assert draw_subsample(TRASHNET, tmp_path / "a", 1000, 300, seed=0) == a
    assert draw_subsample(TRASHNET, tmp_path / "b", 1000, 300, seed=0).val_labels == a.val_labels
    with pytest.raises(UsageError, match="another --out"):
        draw_subsample(TRASHNET, tmp_path / "a", 1000, 300, seed=1)


def _tune(out: Path, budget: str, space: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "offline_tuning", "--data", str(TRASHNET), "--budget", budget,
                             "--out", str(out), "--space", str(space), "--min-trial", "2s", "--trial-command", FAKE,
                             *extra], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'submission'}"})


def _rows(out: Path) -> list[dict]:
    with open(out / "leaderboard.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_a_search_ends_in_its_budget_with_crashes_recorded(tmp_path):
    space = tmp_path / "space.toml"
    space.write_text("head_share = { low = 0.02, high = 0.15 }\nkeep = [1, 2]\n")
    start = time.time()
    proc = _tune(tmp_path / "T", "45s", space, "--warm-up", "3s")
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, output
    assert time.time() - start < 45
    warmup = json.loads((tmp_path / "T" / "warmup" / "outcome.json").read_text())
    assert warmup["state"] == "COMPLETE" and "warm-up: COMPLETE" in output, "the warm-up ran first, outside the study"
    assert "decoding and extraction took 20% of the trials' time" in output  # the stand-in reports 20%
    rows = _rows(tmp_path / "T")
    assert rows[0]["state"] == "COMPLETE" and any(r["settings"] == "defaults" for r in rows)
    crashed = [r for r in rows if r["state"] == "FAIL"]
    assert crashed and all("deliberate crash" in r["reason"] for r in crashed)
    best = json.loads((tmp_path / "T" / "best_config.json").read_text())
    assert best.get("keep", 1) == 1
    assert (tmp_path / "T" / "accuracy_over_time.png").stat().st_size > 1000


def test_two_workers_on_one_journal_run_no_trial_twice_and_resume_keeps_finished_trials(tmp_path):
    space = tmp_path / "space.toml"
    space.write_text("head_share = { low = 0.02, high = 0.15 }\n")
    procs = [_tune(tmp_path / "T", "40s", space) for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stdout.read()
    rows = _rows(tmp_path / "T")
    keys = [(r["rung"], r["settings"], r["seed"]) for r in rows]
    assert len(keys) == len(set(keys)) and len(rows) >= 4
    finished = {r["trial"] for r in rows}
    again = _tune(tmp_path / "T", "40s", space)  # the search ended: a new one on the study, with its own deadline
    assert again.wait(timeout=120) == 0
    assert finished <= {r["trial"] for r in _rows(tmp_path / "T")}
    assert len(_rows(tmp_path / "T")) > len(rows)


def test_a_hung_trial_is_killed_past_its_budget_and_recorded_as_failed(tmp_path):
    (tmp_path / "val").mkdir()
    (tmp_path / "subsample.json").write_text(json.dumps({"val_labels": {"a.jpg": 0}}))
    data = Subsample(tmp_path / "train", tmp_path / "val", {"a.jpg": 0}, 2, 1)
    spec = TrialSpec(tmp_path / "trial", data, {"keep": 3}, seed=0, budget_s=1.0, grace_s=1.0, kill_after_s=1.0,
                     command=tuple(FAKE.split()))  # keep=3: ignores SIGTERM and sleeps for an hour
    start = time.time()
    outcome = run_trial(spec, stop_at=start + 60)
    assert outcome.state == "FAIL" and "past its 1s budget" in outcome.reason
    assert time.time() - start < 10, "SIGKILL followed the ignored SIGTERM"


def test_sqlite_storage_is_refused_with_the_reason(tmp_path):
    with pytest.raises(UsageError, match="SQLite's locks do not hold"):
        open_study(tmp_path, f"sqlite:///{tmp_path}/s.db", "tune")


def test_two_workers_on_postgresql_run_no_trial_twice_and_stop_at_the_shared_deadline(tmp_path, postgres_url):
    space = tmp_path / "space.toml"
    space.write_text("head_share = { low = 0.02, high = 0.15 }\n")
    start = time.time()
    procs = [_tune(tmp_path / f"machine{i}", "30s", space, "--storage", postgres_url, "--study", "two")
             for i in range(2)]  # two output folders, as on two machines
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stdout.read()
    assert time.time() - start < 30 + 3, "both ended by the deadline of the first"
    rows = _rows(tmp_path / "machine0")
    keys = [(r["rung"], r["settings"], r["seed"]) for r in rows]
    assert len(keys) == len(set(keys)) and len(rows) >= 3  # both workers ran trials (3 in a loaded full suite)
    assert {r["trial"] for r in rows} == {r["trial"] for r in _rows(tmp_path / "machine1")}, "one study"


def test_a_search_killed_midway_keeps_its_finished_trials_and_still_ends_by_its_budget(tmp_path):
    space = tmp_path / "space.toml"
    space.write_text("head_share = { low = 0.02, high = 0.15 }\n")
    start = time.time()
    first = _tune(tmp_path / "T", "60s", space)  # 40 s of trials: room for the rerun after the kill
    while time.time() - start < 30 and sum(r["state"] == "COMPLETE" for r in _rows_or_none(tmp_path / "T")) < 3:
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait()
    finished = {r["trial"] for r in _rows(tmp_path / "T") if r["state"] == "COMPLETE"}
    assert len(finished) >= 3
    again = _tune(tmp_path / "T", "60s", space)
    assert again.wait(timeout=120) == 0, again.stdout.read()
    assert time.time() - start < 60 - 20 + 3, "the rerun kept the first run's deadline (its start + 60 s - reserve)"
    rows = _rows(tmp_path / "T")
    complete = [(r["rung"], r["settings"], r["seed"]) for r in rows if r["state"] == "COMPLETE"]
    assert finished <= {r["trial"] for r in rows} and len(complete) == len(set(complete)), "nothing redone"
    assert len(complete) > len(finished)


def _rows_or_none(out: Path) -> list[dict]:
    return _rows(out) if (out / "leaderboard.csv").exists() else []
