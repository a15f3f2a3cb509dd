import subprocess
import sys


def run(*args):
    return subprocess.run([sys.executable, "-m", "cai_utils", *args], capture_output=True,
                          text=True)


def test_help_lists_subcommands():
    result = run("--help")
    assert result.returncode == 0
    for command in ("info", "validate", "diff", "critique"):
        assert command in result.stdout


def test_info_without_loading():
    result = run("info", "--no-load", "--profile", "ci")
    assert result.returncode == 0, result.stderr
    assert "profile   ci" in result.stdout and "transformers" in result.stdout
    assert "answers and judging in float32, training in float32" in result.stdout  # ci never bf16


def test_info_accepts_the_cpu_stand_ins_of_the_gpu_profiles():
    result = run("info", "--no-load", "--profile", "t4-cpu")
    assert result.returncode == 0, result.stderr
    assert "profile   t4-cpu" in result.stdout and "4-bit True" in result.stdout


def test_info_loads_the_default_model():
    result = run("info", "--profile", "ci")
    assert result.returncode == 0, result.stderr
    assert "default model loads" in result.stdout


def test_unknown_profile_is_rejected():
    result = run("info", "--profile", "tpu")
    assert result.returncode == 2 and "invalid choice: 'tpu'" in result.stderr


def test_package_exports_resolve():
    import cai_utils

    for name in cai_utils.__all__:
        assert getattr(cai_utils, name) is not None
