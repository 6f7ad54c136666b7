import os

import pytest

# part of the dev extras; an image without them (the H200's, for `-m gpu tests/`) skips this module, saying why
nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (pip install -e '.[dev]')")
NotebookClient = pytest.importorskip("nbclient", reason="nbclient is not installed (pip install -e '.[dev]')"
                                     ).NotebookClient

from tests.eval.conftest import REPO


def _tree(folder):
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.mark.slow
def test_frontier_notebook_reads_a_relative_folder_from_the_repository_root_and_writes_nothing(quick_results,
                                                                                                 monkeypatch):
    folder, _ = quick_results
    # relative to the repository root, as the README writes it; read from notebooks/ it would not exist
    relative = os.path.relpath(folder, REPO)
    assert not (REPO / "notebooks" / relative).is_dir()
    monkeypatch.setenv("SVG2_RESULTS", relative)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    before = _tree(folder)
    nb = nbformat.read(REPO / "notebooks" / "frontier.ipynb", as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") + str(o.get("data", {}).get("text/markdown", "")) for o in outputs)
    assert f"{folder.resolve()}: 6 rows, 6 method configurations" in text
    assert "### svg2" in text and "| method | PSNR |" in text
    assert "Paired difference against positional" in text  # matched density, against the first family
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert f"figure title: {folder.name} | model: " in text  # the figure's own title
    assert _tree(folder) == before  # drawn inline: nothing new or changed in the folder it reads
