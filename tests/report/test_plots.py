"""cftools.report.plots: the training, kNN and sweep plots are PNG files."""


def test_training_plot_from_a_model_summary(tmp_path):
    from cftools.report import plots

    training = {"history": [{"epoch": e, "loss": 1 / e, "val_roc_auc": 0.9 + e / 100}
                            for e in (1, 2, 3)],
                "validation": {"cosine": {"roc_auc": 0.91}, "model": {"roc_auc": 0.93}}}
    plots.training_curves(tmp_path / "t.png", training)
    plots.knn_curves(tmp_path / "k.png", [0.9, 0.8], [0.2, 0.4])
    plots.sweep(tmp_path / "s.png", [{"threshold": t, "pairwise_f": t, "bcubed_f": t}
                                     for t in (0.1, 0.5, 0.9)], "infomap", 0.5, "x")
    for name in ("t.png", "k.png", "s.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
