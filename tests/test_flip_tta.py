"""Flip test-time augmentation stays on unless val says it clearly hurts (more than 2 standard errors)."""

from timebox.online import use_flip_tta


def test_a_val_difference_within_noise_keeps_flip_tta_on():
    assert use_flip_tta(0.9010, 0.8977, 303)  # one val image of 303: what turned it off on trashnet
    assert use_flip_tta(0.90, 0.90, 303) and use_flip_tta(0.88, 0.91, 303)


def test_a_clear_drop_on_val_turns_flip_tta_off():
    assert not use_flip_tta(0.90, 0.85, 303)  # 15 images below: about 3 standard errors


def test_the_margin_narrows_with_more_val_images():
    assert use_flip_tta(0.90, 0.88, 300) and not use_flip_tta(0.90, 0.88, 30_000)
