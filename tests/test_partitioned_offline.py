"""Offline proof for the formats read with unstructured (and a PDF table, read with pdfplumber):
every one parsed in a process with no network at all (`unshare -n`), a fresh HOME and an empty
NLTK_DATA, with unstructured's telemetry switches unset, while an LD_PRELOAD shim logs every host-name lookup and a Python audit hook logs
every socket call and every program started. Nothing may look a name up, use a socket, start
anything but pandoc, load an NLP model (spaCy, NLTK) or torch, or write under HOME."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from localllm.documents.parse import parse_file
from tests.conftest import ROOT, cli_env, require
from tests.format_factory import write_all, write_table_pdf
from tests.test_offline import Watched, _unshare_works, resolve_shim  # noqa: F401 (a fixture)

pytestmark = pytest.mark.network_free

IN_NAMESPACE = """
import importlib.util, json, os, sys
from pathlib import Path

events = []


def audit(event, args):
    if event == "socket.__new__":
        return
    if event == "socket.bind" and args[1][0] in ("::1", "127.0.0.1"):
        return  # urllib3 probes for IPv6 at import with a bind to loopback, never a connection
    if event.startswith("socket.") or event in ("urllib.Request", "http.client.connect"):
        events.append([event, repr(args)[:200]])
    elif event in ("subprocess.Popen", "os.exec", "os.posix_spawn", "os.system"):
        events.append([event, os.path.basename(str(args[0]))])


sys.addaudithook(audit)
from localllm.documents.model import DocumentError
from localllm.documents.parse import parse_file

out = {}
for name in sys.argv[1:]:
    try:
        doc = parse_file(Path(name))
        out[Path(name).name] = [[e.page, e.kind, e.section, e.text] for e in doc.elements]
    except DocumentError as e:
        out[Path(name).name] = str(e)
out["events"] = events
heavy = ("spacy", "thinc", "nltk", "torch", "en_core_web_sm")
out["imported"] = sorted(m for m in sys.modules if m.split(".")[0] in heavy)
tokenize = sys.modules.get("unstructured.nlp.tokenize")
out["tokenize"] = getattr(tokenize, "__doc__", None)
out["model_installed"] = importlib.util.find_spec("en_core_web_sm") is not None
out["telemetry_off"] = [os.environ.get(k) for k in ("DO_NOT_TRACK", "SCARF_NO_ANALYTICS")]
print(json.dumps(out))
"""

UNSET = ("DO_NOT_TRACK", "SCARF_NO_ANALYTICS", "UNSTRUCTURED_DISABLE_NOTICE", "NLTK_DATA")


def test_every_partitioned_format_parses_with_no_network(
    tmp_path: Path,
    resolve_shim: Path,  # noqa: F811
) -> None:
    require(_unshare_works(), "`unshare -n` needs root (or user namespaces) on this machine")
    folder = tmp_path / "files"
    folder.mkdir()
    good = write_all(folder)
    cells = [["Animal", "Count"], ["Okapi", "14"], ["Bonobo", "31"]]
    good[".pdf"] = write_table_pdf(folder / "census.pdf", cells)  # pdfplumber's table finder
    cut = folder / "cut.rtf"
    cut.write_bytes(good[".rtf"].read_bytes()[:60])  # pandoc's error path, too
    files = [*good.values(), cut]
    watched = Watched(resolve_shim, tmp_path / "resolved.log", tmp_path / "home")
    nltk_data, temp = tmp_path / "nltk_data", tmp_path / "tmp"
    nltk_data.mkdir()
    temp.mkdir()
    env = {k: v for k, v in cli_env().items() if k not in UNSET}
    env = watched.env({**env, "NLTK_DATA": str(nltk_data), "TMPDIR": str(temp)})
    result = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", IN_NAMESPACE, *map(str, files)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    pandoc = (["subprocess.Popen", "pandoc"], ["subprocess.Popen", "pandoc.exe"])
    events = out.pop("events")
    assert [e for e in events if e not in pandoc] == [], "no socket used, nothing but pandoc run"
    assert ["subprocess.Popen", "pandoc"] in events, "the audit hook saw pandoc start"
    assert out.pop("imported") == [], "no NLP stack, no torch"
    assert out.pop("tokenize").startswith("Rule-based stand-ins"), "unstructured's spaCy helpers"
    assert out.pop("model_installed") is False, "no spaCy model was installed"
    assert out.pop("telemetry_off") == ["1", "true"]
    watched.assert_nothing_phoned_home()
    assert not list(watched.home.rglob("*")), "nothing written under HOME"
    assert not list(nltk_data.iterdir()), "no NLTK data fetched"
    assert not list(temp.glob("en_core_web_sm*")), "no model install was even begun"
    for path in files[:-1]:
        here = [[e.page, e.kind, e.section, e.text] for e in parse_file(path).elements]
        assert out[path.name] == here, f"{path.name} parses differently with no network"
        assert here
    assert out["cut.rtf"].startswith("cut.rtf: can't be read as an RTF document")
    assert [kind for _, kind, _, _ in out["census.pdf"] if kind == "table"] == ["table"]
