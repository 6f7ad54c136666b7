import os

import nbformat
from nbclient import NotebookClient

from tests.eval.conftest import REPO


def test_frontier_notebook_runs_on_a_results_folder(quick_results, monkeypatch):
    folder, _ = quick_results
    monkeypatch.setenv("SVG2_RESULTS", str(folder))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(REPO / "notebooks" / "frontier.ipynb", as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") + str(o.get("data", {}).get("text/markdown", "")) for o in outputs)
    assert "6 method configurations" in text and "### svg2" in text and "| method | PSNR |" in text
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert (folder / "frontier_notebook.png").is_file()
