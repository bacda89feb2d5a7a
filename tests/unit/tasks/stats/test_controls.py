from tasks.stats.controls import control_passed, measured_direction, planted_direction


def test_planted_directions_of_the_zoo():
    assert [planted_direction("zoo", v) for v in ("text_dominant", "balanced", "vision_dominant")] == ["text", "balanced",
                                                                                                      "image"]
    assert planted_direction("openclip", "openai") is None


def test_a_dominant_control_must_collapse_toward_its_side_and_a_balanced_one_not_at_all():
    assert control_passed("text", measured_direction(True, "text", "collapsed", "text"))
    assert not control_passed("text", measured_direction(True, "image", "collapsed", "image"))
    assert not control_passed("image", measured_direction(False, "image", "imbalanced", "image"))
    assert control_passed("balanced", measured_direction(False, "image", "not shown to differ", "none"))
    assert not control_passed("balanced", measured_direction(True, "image", "collapsed", "image"))
    assert control_passed("mixed", measured_direction(False, "image", "per-sample dominance", "mixed"))
    assert control_passed(None, "text") is None
