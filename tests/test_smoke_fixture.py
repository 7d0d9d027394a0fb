def test_demo_template_is_seeded(demo_ws):
    assert len(demo_ws.datasets.all_versions()) >= 2
    assert demo_ws.models.champion(demo_ws.policy.model_name) is not None
