"""``fcn serve`` as a command: clear errors before starting, no torch in the serving process."""

from __future__ import annotations

import subprocess
import sys

from fcn.cli import main


def test_a_missing_model_file_is_a_one_line_error(tmp_path, capsys) -> None:
    assert main(["serve", "--model", f"x={tmp_path / 'nope.onnx'}"]) == 2
    err = capsys.readouterr().err
    assert "fcn serve: error: model file not found" in err and "nope.onnx" in err


def test_an_invalid_model_name_is_refused(conv_model, capsys) -> None:
    assert main(["serve", "--model", f"../bad={conv_model}"]) == 2
    assert "invalid model name" in capsys.readouterr().err


def test_the_http_app_imports_no_torch() -> None:
    code = (
        "import sys, service.http.app, service.http.server, service.commands.serve\n"
        "print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
