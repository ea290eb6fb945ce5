"""`trainwell report RUN_DIR`: report.html renders, and every plot it references is a real PNG."""

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import pytest

from trainwell.cli import main
from trainwell.config.expressions import parse_metric_expression
from trainwell.report.plots import plot_validation

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.sources += [value for name, value in attrs if name == "src" and value]


def referenced_images(report: Path) -> list[Path]:
    parser = _Images()
    parser.feed(report.read_text(encoding="utf-8"))
    return [report.parent / src for src in parser.sources]


def assert_valid_png(path: Path) -> None:
    assert path.is_file(), f"{path} is referenced but missing"
    assert path.read_bytes()[:8] == PNG_MAGIC, f"{path} is not a PNG"
    pixels = matplotlib.image.imread(path)  # decodes the whole image
    assert pixels.ndim == 3 and pixels.shape[0] > 50 and pixels.shape[1] > 50
    pil = pytest.importorskip("PIL.Image")
    with pil.open(path) as image:
        image.verify()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("run")
    assert main(["train", "configs/examples/regression.yaml", f"run.dir={path}", "train.progress_bar=off"]) == 0
    return path


def test_report_renders_every_plot(run_dir: Path, capsys) -> None:
    assert main(["report", str(run_dir)]) == 0
    report = run_dir / "report.html"
    assert f"Wrote {report}" in capsys.readouterr().out
    images = referenced_images(report)
    names = {p.name for p in images}
    assert {"losses.png", "lr.png", "gradients.png", "validation.png", "data_wait.png", "updates.png"} <= names
    for image in images:
        assert_valid_png(image)
        assert not Path(image.relative_to(run_dir)).is_absolute()  # relative: the folder can be moved
    text = report.read_text(encoding="utf-8")
    assert "The training doctor found no problems." in text and "RegressionTask" in text


def test_report_shows_findings_and_draws_a_run_that_stopped(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    args = ["train", "configs/examples/regression.yaml", f"run.dir={tmp_path}"]
    assert main([*args, "task.class_path=fault_tasks:NaNRegressionTask"]) == 1  # stopped at step 10
    out = tmp_path / "elsewhere" / "page.html"
    assert main(["report", str(tmp_path), "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert 'class="finding error"' in text and "train.nonfinite" in text and "stopped by the non-finite policy" in text
    for image in referenced_images(out):
        assert_valid_png(image)


def test_metric_groups_become_bar_charts_and_the_best_evaluation_is_marked(tmp_path: Path) -> None:
    # Per-joint errors reported as `mpjpe/<joint>` metrics (any `group/item` name) get a bar chart.
    joints = ["wrist", "thumb_tip", "index_tip"]
    (tmp_path / "config.yaml").write_text("eval: {best_metric: '(mpjpe + pa_mpjpe) / 2', best_mode: min}\n")
    records = [{"kind": "train", "epoch": 1, "step": 10, "loss": 5.0, "loss/joint_3d": 5.0, "lr": 1e-3}]
    for epoch, (mpjpe, pa) in enumerate([(40.0, 30.0), (20.0, 16.0), (22.0, 15.0)], start=1):
        per_joint = {f"mpjpe/{j}": mpjpe * (1 + k) for k, j in enumerate(joints)}
        records.append({"kind": "val", "epoch": epoch, "step": 10 * epoch, "mpjpe": mpjpe, "pa_mpjpe": pa, **per_joint})
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["report", str(tmp_path)]) == 0
    images = referenced_images(tmp_path / "report.html")
    assert "group_mpjpe.png" in {p.name for p in images}
    for image in images:
        assert_valid_png(image)
    # The marked evaluation is the one the checkpoint rule picks: (20 + 16) / 2 = 18 < (22 + 15) / 2.
    val = [r for r in records if r["kind"] == "val"]
    scores = [(r["mpjpe"] + r["pa_mpjpe"]) / 2 for r in val]
    _, best = plot_validation(val, tmp_path / "v.png", parse_metric_expression("(mpjpe + pa_mpjpe) / 2"), "min")
    assert best == scores.index(min(scores)) == 1


def test_report_of_a_directory_that_is_not_a_run(tmp_path: Path, capsys) -> None:
    assert main(["report", str(tmp_path)]) == 2
    assert re.search(r"not a trainwell run directory", capsys.readouterr().err)
