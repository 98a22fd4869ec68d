"""PACS round trips against a real Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``) on loopback.

One Orthanc per test session, on free ports, with a temporary storage folder and HTTP basic auth (so the
credentials path is exercised). Skipped with a reason when Orthanc is not installed; under ``CI=true`` that
is a failure (``.ci/run`` installs it). The real series is the dcmqi 3-slice CT from the data folder.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pydicom
import pytest
import requests

ORTHANC = shutil.which("Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
USER, PASSWORD = "m2f", "s3cret-not-logged"


def _need_orthanc() -> None:
    if ORTHANC and DICOMWEB_PLUGIN.is_file():
        return
    msg = "Orthanc with its DICOMweb plugin is not installed (apt-get install orthanc orthanc-dicomweb)"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Orthanc:
    def __init__(self, root: Path):
        self.http, self.dicom, self.move_port = _free_port(), _free_port(), _free_port()
        self.root = root
        config = {
            "Name": "m2f-med-test", "StorageDirectory": str(root / "db"), "IndexDirectory": str(root / "db"),
            "HttpPort": self.http, "DicomPort": self.dicom, "DicomAet": "ORTHANC", "HttpBindAddress": "127.0.0.1"
            if False else None,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": True, "RegisteredUsers": {USER: PASSWORD},
            "DicomModalities": {"m2fmed": ["M2FMED", "127.0.0.1", self.move_port]},
            "DicomCheckModalityHost": False, "DicomAlwaysAllowEcho": True, "DicomAlwaysAllowStore": True,
            "Plugins": [str(DICOMWEB_PLUGIN)], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "StorageCompression": False, "HttpTimeout": 30, "ConcurrentJobs": 1, "SaveJobs": False,
        }
        config = {k: v for k, v in config.items() if v is not None}
        (root / "orthanc.json").write_text(json.dumps(config))
        self.log = open(root / "orthanc.log", "w")
        self.proc = subprocess.Popen([ORTHANC, str(root / "orthanc.json")], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.rest = f"http://127.0.0.1:{self.http}"
        self.auth = (USER, PASSWORD)
        end = time.monotonic() + 60
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError("Orthanc exited: " + (root / "orthanc.log").read_text()[-2000:])
            try:
                if requests.get(self.rest + "/system", auth=self.auth, timeout=2).ok:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        raise RuntimeError("Orthanc did not start in 60 s")

    @property
    def web(self) -> str:
        return f"{self.rest}/dicom-web"

    @property
    def ae(self) -> str:
        return f"ORTHANC@127.0.0.1:{self.dicom}"

    def get(self, path: str):
        r = requests.get(self.rest + path, auth=self.auth, timeout=30)
        r.raise_for_status()
        return r.json()

    def upload(self, files) -> None:
        for f in files:
            r = requests.post(self.rest + "/instances", data=Path(f).read_bytes(), auth=self.auth, timeout=30)
            r.raise_for_status()

    def segs_of(self, study_uid: str) -> list[pydicom.Dataset]:
        """The SEG instances Orthanc holds in that study (read back from Orthanc as DICOM files)."""
        ids = requests.post(self.rest + "/tools/find", auth=self.auth, timeout=30, json={
            "Level": "Instance", "Query": {"StudyInstanceUID": study_uid, "Modality": "SEG"}}).json()
        out = []
        for i in ids:
            raw = requests.get(f"{self.rest}/instances/{i}/file", auth=self.auth, timeout=30).content
            from io import BytesIO

            out.append(pydicom.dcmread(BytesIO(raw)))
        return out

    def delete_segs(self, study_uid: str) -> None:
        ids = requests.post(self.rest + "/tools/find", auth=self.auth, timeout=30, json={
            "Level": "Series", "Query": {"StudyInstanceUID": study_uid, "Modality": "SEG"}}).json()
        for i in ids:
            requests.delete(f"{self.rest}/series/{i}", auth=self.auth, timeout=30).raise_for_status()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory):
    _need_orthanc()
    server = Orthanc(tmp_path_factory.mktemp("orthanc"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ct_series(data_dir):
    files = sorted((data_dir / "dcmqi" / "ct-3slice").glob("*.dcm"))
    assert len(files) == 3
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    return files, str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)


@pytest.fixture
def pacs_env(monkeypatch):
    """Credentials the way a user gives them: environment variables (never arguments)."""
    from m2f_med.pacs.credentials import ENV_FILE, ENV_PASSWORD, ENV_TOKEN, ENV_USER

    for k in (ENV_TOKEN, ENV_FILE):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv(ENV_USER, USER)
    monkeypatch.setenv(ENV_PASSWORD, PASSWORD)


def _check_seg_references(seg: pydicom.Dataset, study_uid: str, series_uid: str) -> None:
    assert seg.Modality == "SEG" and str(seg.StudyInstanceUID) == study_uid
    refs = {str(r.SeriesInstanceUID) for r in seg.ReferencedSeriesSequence}
    assert series_uid in refs


@pytest.fixture(scope="session")
def predicted_seg(orthanc, ct_series, tmp_path_factory):
    """Pull by DICOMweb (WADO-RS), then predict with the shipped bundle: one DICOM-SEG."""
    from m2f_med.pacs.credentials import Credentials
    from m2f_med.pacs.dicomweb import retrieve, search_studies
    from m2f_med.pacs.pipeline import predict_and_push, seg_files
    from m2f_med.pacs.target import parse_target

    files, study, series = ct_series
    orthanc.upload(files)
    creds = Credentials(user=USER, password=PASSWORD)
    target = parse_target(orthanc.web)
    found = search_studies(target, study_uid=study, credentials=creds)
    assert [s["StudyInstanceUID"] for s in found] == [study] and "CT" in found[0]["ModalitiesInStudy"]
    assert search_studies(target, modality="MR", credentials=creds) == []
    pulled = tmp_path_factory.mktemp("pulled")
    written = retrieve(target, study, pulled, credentials=creds)
    assert len(written) == 3 and all(p.parent.name == series and p.parent.parent.name == study for p in written)
    assert {pydicom.dcmread(p).SOPInstanceUID for p in written} == {pydicom.dcmread(f).SOPInstanceUID for f in files}
    out = tmp_path_factory.mktemp("predicted")
    result = predict_and_push([pulled], out, device="cpu", quiet=True)
    segs = seg_files(result["report"], out)
    assert len(segs) == 1, result["report"]["series"]
    return segs[0]


def test_dicomweb_pull_predict_and_stow_the_seg_into_the_same_study(orthanc, ct_series, predicted_seg, pacs_env):
    from m2f_med.pacs.ops import push

    _, study, series = ct_series
    orthanc.delete_segs(study)
    assert push(orthanc.web, [predicted_seg]) == 1  # STOW-RS, basic auth from the environment
    segs = orthanc.segs_of(study)
    assert len(segs) == 1
    _check_seg_references(segs[0], study, series)


def test_dimse_echo_find_get_move_and_c_store(orthanc, ct_series, predicted_seg, tmp_path):
    from m2f_med.pacs import dimse
    from m2f_med.pacs.ops import pull, push, search
    from m2f_med.pacs.target import parse_target

    files, study, series = ct_series
    target = parse_target(orthanc.ae)
    dimse.echo(target)
    found = search(orthanc.ae, study_uid=study)
    assert [s["StudyInstanceUID"] for s in found] == [study]
    got = pull(orthanc.ae, study, tmp_path / "get", series_uid=series)  # C-GET
    assert len(got) == 3 and {p.parent.name for p in got} == {series}
    moved = pull(orthanc.ae, study, tmp_path / "move", series_uid=series, method="move",
                 move_port=orthanc.move_port)  # C-MOVE to our temporary Storage SCP
    assert sorted(p.name for p in moved) == sorted(p.name for p in got)
    orthanc.delete_segs(study)
    assert push(orthanc.ae, [predicted_seg]) == 1  # C-STORE
    segs = orthanc.segs_of(study)
    assert len(segs) == 1
    _check_seg_references(segs[0], study, series)


def test_listener_receives_a_storescu_series_segments_it_and_sends_the_seg_on(orthanc, ct_series, tmp_path):
    from m2f_med.pacs.listener import DONE_MARKER, Listener
    from m2f_med.pacs.pipeline import predict_and_push

    storescu = shutil.which("storescu")
    if storescu is None:
        if os.environ.get("CI"):
            pytest.fail("storescu (dcmtk) missing")
        pytest.skip("storescu (dcmtk) missing")
    files, study, series = ct_series
    orthanc.delete_segs(study)
    port = _free_port()

    def process(folder: Path) -> dict:
        r = predict_and_push([folder], tmp_path / "results" / folder.name, push_to=orthanc.ae, device="cpu",
                             quiet=True)
        return {"pushed": r["pushed"]}

    listener = Listener(tmp_path / "incoming", process, aet="M2FMED", port=port, bind="127.0.0.1",
                        quiet_s=1.0).start()
    try:
        proc = subprocess.run([storescu, "-aec", "M2FMED", "127.0.0.1", str(port), *map(str, files)],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert listener.wait_idle(300)
    finally:
        listener.stop()
    folder = tmp_path / "incoming" / study / series
    assert len(list(folder.glob("*.dcm"))) == 3 and (folder / DONE_MARKER).is_file()
    assert json.loads((folder / DONE_MARKER).read_text()) == {"pushed": 1}
    segs = orthanc.segs_of(study)
    assert len(segs) == 1
    _check_seg_references(segs[0], study, series)


def test_listener_restart_processes_what_was_received_before_a_crash(ct_series, tmp_path):
    """A series received (atomically) but not processed before a crash is processed at the next start."""
    from m2f_med.pacs.listener import DONE_MARKER, Listener
    from m2f_med.pacs.store_files import save_instance

    files, study, series = ct_series
    incoming = tmp_path / "incoming"
    for f in files[:2]:
        save_instance(incoming, pydicom.dcmread(f))
    folder = incoming / study / series
    (folder / ".03.dcm.x.partial.dcm").write_bytes(b"truncated")  # a write the crash interrupted
    seen = []
    listener = Listener(incoming, lambda p: seen.append(p) or {"n": len(list(p.glob("*.dcm")))},
                        port=_free_port(), bind="127.0.0.1", quiet_s=0.5).start()
    try:
        assert listener.wait_idle(30)
    finally:
        listener.stop()
    assert seen == [folder] and json.loads((folder / DONE_MARKER).read_text()) == {"n": 2}
    assert not list(folder.glob("*.partial*"))


def test_down_refusing_and_unauthorised_pacs_give_one_line_errors(orthanc, monkeypatch, capsys):
    from m2f_med.cli import main
    from m2f_med.pacs.credentials import ENV_PASSWORD, ENV_USER
    from m2f_med.pacs.target import PacsError, parse_target

    monkeypatch.setattr("m2f_med.pacs.retry.time.sleep", lambda s: None)  # bounded retries, no waiting
    dead = _free_port()
    for target in (f"ORTHANC@127.0.0.1:{dead}", f"http://127.0.0.1:{dead}/dicom-web"):
        assert main(["pull", target, "--study", "1.2.3", "-o", "/nonexistent-not-created"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "after 3 attempts" in err[0] and "Traceback" not in err[0]
    monkeypatch.setenv(ENV_USER, USER)
    monkeypatch.setenv(ENV_PASSWORD, "wrong-password")
    assert main(["search", orthanc.web]) == 2
    err = capsys.readouterr().err
    assert "HTTP 401" in err and "wrong-password" not in err and len(err.strip().splitlines()) == 1
    with pytest.raises(PacsError, match="credentials are not accepted"):
        parse_target(f"http://{USER}:{PASSWORD}@127.0.0.1:{orthanc.http}/dicom-web")
    # an unknown study over C-GET: a refusal (Orthanc answers 0xC000), one line, not a hang
    assert main(["pull", orthanc.ae, "--study", "1.2.3.4.5", "-o", "/tmp/m2f-none"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "C-GET" in err[0] and "0xC000" in err[0]


def test_credentials_from_file_and_never_in_repr(tmp_path):
    from m2f_med.pacs.credentials import ENV_FILE, load_credentials

    f = tmp_path / "pacs.txt"
    f.write_text("alice:pa55\n")
    c = load_credentials({ENV_FILE: str(f)})
    assert (c.user, c.password) == ("alice", "pa55") and "pa55" not in repr(c)
    f.write_text(json.dumps({"token": "tok123"}))
    c = load_credentials({ENV_FILE: str(f)})
    assert c.headers() == {"Authorization": "Bearer tok123"} and "tok123" not in repr(c)


def test_cli_predict_from_a_pacs_and_push_the_seg_back(orthanc, ct_series, predicted_seg, pacs_env, tmp_path, capsys):
    """``m2f-med predict --from URL --study UID --push AE``: WADO-RS in, C-STORE out, one command."""
    from m2f_med.cli import main

    _, study, series = ct_series
    orthanc.delete_segs(study)
    out = tmp_path / "out"
    rc = main(["predict", "--from", orthanc.web, "--study", study, "--push", orthanc.ae, "-o", str(out), "-q"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert PASSWORD not in captured.out + captured.err
    assert len(list((out / "pulled" / study / series).glob("*.dcm"))) == 3
    segs = orthanc.segs_of(study)
    assert len(segs) == 1
    _check_seg_references(segs[0], study, series)
