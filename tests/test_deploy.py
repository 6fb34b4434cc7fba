"""The cluster recipe in deploy/: lint rules for the Dockerfiles, the Kubernetes Job's
TF_CONFIG, and the Slurm script run against stand-in ``scontrol``/``srun``/``python``.

No container runtime or cluster is available here, so these check what can be checked
without one: the files parse, follow the rules below, and hand every worker the TF_CONFIG
and command line the multi-worker CLI contract needs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOCKERFILES = ["Dockerfile", "Dockerfile.gpu"]


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_rules(name):
    steps = _instructions(DEPLOY / name)
    keywords = [keyword for keyword, _ in steps]
    base = dict(steps)["FROM"]
    # A pinned base image: a tag that names a version, never latest or none.
    assert ":" in base and not base.endswith(":latest"), base
    assert re.search(r":\d", base), base
    # Not root at run time, exec-form CMD, no remote ADD, no unpinned apt installs.
    users = [rest for keyword, rest in steps if keyword == "USER"]
    assert users and users[-1] not in ("root", "0")
    cmd = [rest for keyword, rest in steps if keyword == "CMD"]
    assert len(cmd) == 1 and isinstance(json.loads(cmd[0]), list)
    assert not any(k == "ADD" and "://" in rest for k, rest in steps)
    for keyword, rest in steps:
        if keyword == "RUN" and "apt-get install" in rest:
            assert "--no-install-recommends" in rest and "rm -rf /var/lib/apt/lists" in rest
    # Every COPY source exists in the repository.
    for keyword, rest in steps:
        if keyword == "COPY":
            *sources, _ = rest.split()
            for source in sources:
                assert (ROOT / source).exists(), f"{name}: COPY {source} does not exist"
    assert keywords.index("USER") > keywords.index("RUN")


def test_app_image_serves_and_checks_health():
    steps = _instructions(DEPLOY / "Dockerfile")
    assert ("EXPOSE", "8501") in steps
    assert any(keyword == "HEALTHCHECK" and "_stcore/health" in rest for keyword, rest in steps)
    assert json.loads(dict(steps)["CMD"])[:2] == ["transfer-studio", "app"]


def test_images_install_pinned_requirements():
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[0-9][^\s]*", line), line
    assert "tensorflow[and-cuda]==2.21.0" in (DEPLOY / "Dockerfile.gpu").read_text()


def test_kubernetes_job_gives_every_pod_a_worker_tf_config():
    documents = list(yaml.safe_load_all((DEPLOY / "k8s-train-job.yaml").read_text()))
    service = next(d for d in documents if d["kind"] == "Service")
    job = next(d for d in documents if d["kind"] == "Job")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"]
    template = spec["template"]["spec"]
    assert service["spec"]["clusterIP"] == "None"
    assert template["subdomain"] == service["metadata"]["name"]
    (container,) = template["containers"]
    script = container["args"][0]
    assert "python -m core train --config" in script and "--json" in script
    exported = re.search(r'export TF_CONFIG="(.*?)" &&', script, re.S).group(1)
    for index in range(spec["completions"]):
        raw = exported.replace('\\"', '"').replace("${JOB_COMPLETION_INDEX}", str(index))
        tf_config = json.loads(raw)
        workers = tf_config["cluster"]["worker"]
        assert len(workers) == spec["completions"]
        assert tf_config["task"] == {"type": "worker", "index": index}
        # Pod DNS names of an Indexed Job behind the headless service.
        job_name = job["metadata"]["name"]
        assert workers[index].startswith(f"{job_name}-{index}.{service['metadata']['name']}:")
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["TRANSFER_STUDIO_HOME"] in mounts


def test_slurm_script_runs_one_worker_per_node_with_its_index(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.jsonl"
    (bin_dir / "scontrol").write_text("#!/usr/bin/env bash\nprintf 'node-a\\nnode-b\\n'\n")
    # srun: run the task command once per task, as Slurm would on each node.
    (bin_dir / "srun").write_text(
        "#!/usr/bin/env bash\n"
        'n=2; for arg in "$@"; do case "$arg" in --ntasks=*) n="${arg#--ntasks=}";; esac; done\n'
        "shift $(( $# - 3 ))\n"
        'for ((i = 0; i < n; i++)); do SLURM_PROCID=$i "$@"; done\n'
    )
    # python: record what each worker would run with.
    (bin_dir / "python").write_text(
        "#!/usr/bin/env bash\n"
        f'printf \'{{"tf_config": %s, "argv": "%s", "home": "%s"}}\\n\' "$TF_CONFIG" "$*" '
        f'"$TRANSFER_STUDIO_HOME" >> {log}\n'
    )
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_JOB_NODELIST="node-[a,b]")
    result = subprocess.run(
        ["bash", str(DEPLOY / "slurm-train.sh"), "/shared/ws", "/shared/ws/run.json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(calls) == 2
    for index, call in enumerate(calls):
        assert call["tf_config"]["cluster"]["worker"] == ["node-a:12345", "node-b:12345"]
        assert call["tf_config"]["task"] == {"type": "worker", "index": index}
        assert call["argv"].startswith("-m core train --config /shared/ws/run.json")
        assert "--runs-dir /shared/ws/runs" in call["argv"]
        assert call["home"] == "/shared/ws"
