"""Model sources and their failure modes, with real broken files; pickle safety."""

import pickle
import zipfile

import pytest
import torch

from interop.errors import LoadError
from interop.sources.torch_files import load_source, scan_pickle_globals
from tests.fixtures.models import tiny

MARKER_NAME = "pwned.txt"


class Malicious:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # would create the marker file if ever unpickled


def test_torchscript_sample_carries_its_spec(sample_copy):
    src = load_source(str(sample_copy("lstm_sum.pt")))
    assert src.format == "torchscript" and src.hints["inputs"][0]["name"] == "x" and src.sha256


def test_pickled_module_needs_trust(tmp_path):
    path = tmp_path / "m.pt"
    torch.save(tiny(), path)
    with pytest.raises(LoadError, match="--trust") as info:
        load_source(str(path))
    assert "tests.fixtures.models.Tiny" in str(info.value)
    assert load_source(str(path), trust=True).format == "pickle"


def test_malicious_pickle_never_runs_without_trust(tmp_path):
    marker = tmp_path / MARKER_NAME
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps(Malicious(str(marker))))
    with pytest.raises(LoadError, match="builtins.open|io.open"):
        load_source(str(raw))
    zipped = tmp_path / "evil.pt"
    torch.save({"weights": Malicious(str(marker))}, zipped)  # inside torch's zip archive
    with pytest.raises(LoadError, match="would import"):
        load_source(str(zipped))
    assert not marker.exists()
    assert any("open" in g for g in scan_pickle_globals(zipped))


def test_state_dict_needs_factory(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(tiny().state_dict(), path)
    with pytest.raises(LoadError, match="--factory"):
        load_source(str(path))
    src = load_source(str(path), factory="tests.fixtures.models:tiny")
    assert src.format == "state_dict"
    with pytest.raises(LoadError, match="does not fit"):
        load_source(str(path), factory="tests.fixtures.models:two_in_two_out")


def test_exported_program(tmp_path):
    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(tiny(), (torch.rand(2, 4),)), path)
    src = load_source(str(path))
    assert src.format == "exported_program" and src.hints["inputs"][0]["shape"] == [2, 4]


def test_factory_source():
    assert load_source("tests.fixtures.models:tiny").format == "factory"


@pytest.mark.parametrize("factory, fragment", [
    ("tests.fixtures.nope:tiny", "cannot import"),
    ("tests.fixtures.models:missing", "no callable"),
    ("tests.fixtures.models:not_a_model", "not an nn.Module"),
    ("tests.fixtures.models:raises", "factory exploded"),
])
def test_bad_factories(factory, fragment):
    with pytest.raises(LoadError, match=fragment):
        load_source(factory)


def _broken_files(tmp_path, sample):
    data = sample.read_bytes()
    files = {
        "empty.pt": b"",
        "random.pt": bytes(range(256)) * 40,
        "text.pt": b"this is not a model\n",
        "truncated.pt": data[: len(data) // 2],
        "zip_no_model.pt": None,
    }
    out = {}
    for name, content in files.items():
        path = tmp_path / name
        if content is None:
            with zipfile.ZipFile(path, "w") as zf:
                zf.writestr("hello.txt", "hi")
        else:
            path.write_bytes(content)
        out[name] = path
    return out


def test_broken_files_are_load_errors(tmp_path, sample_copy):
    for name, path in _broken_files(tmp_path, sample_copy("lstm_sum.pt")).items():
        with pytest.raises(LoadError):
            load_source(str(path))
    with pytest.raises(LoadError, match="does not exist"):
        load_source(str(tmp_path / "missing.pt"))
    with pytest.raises(LoadError, match="folder"):
        load_source(str(tmp_path))
