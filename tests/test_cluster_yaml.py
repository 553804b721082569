"""cluster.yaml and cluster-onprem.yaml, checked offline with the Ray cluster launcher's own validator.

`ray up` runs `prepare_config` (merge with Ray's AWS defaults.yaml, merge setup
commands, docker checks, per-type worker limits) and then `validate_config` (the JSON
schema ray/autoscaler/ray-schema.json plus a few cross-field checks) before it talks
to AWS. Both are pure functions of the config and need no network or credentials, so
they are used here as they are. The steps after them are not: the AWS provider's
`fillout_available_node_types_resources` and `bootstrap_config` (security groups,
subnets, key pair, IAM profile, AMI) call EC2/IAM through boto3 with credentials, and
are left out. cluster-onprem.yaml is also brought up for real, on loopback addresses, by test_onprem.py.
"""
from __future__ import annotations

import copy
import re
import shlex
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")
jsonschema = pytest.importorskip("jsonschema")
ray = pytest.importorskip("ray")
from ray.autoscaler._private.util import prepare_config, validate_config  # noqa: E402

from sweep.scales import SCALES  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"
CONFIGS = [CLUSTER_YAML, ROOT / "cluster-onprem.yaml"]
MLFLOW_SCRIPT = "bash ~/kohonen/scripts/cluster/mlflow.sh"
DOCKER_HOME = "/home/ray"  # $HOME of the rayproject images, where `~` points in the containers


@pytest.fixture(scope="module")
def text() -> str:
    return CLUSTER_YAML.read_text()


@pytest.fixture
def config(text) -> dict:
    """A fresh copy per test: prepare_config and the negative tests change it."""
    return yaml.safe_load(text)


@pytest.fixture
def prepared(config) -> dict:
    return prepare_config(copy.deepcopy(config))


def _workers(cfg: dict) -> dict:
    return {name: t for name, t in cfg["available_node_types"].items() if name != cfg["head_node_type"]}


def _head_commands(cfg: dict) -> str:
    return "\n".join(cfg["head_start_ray_commands"])


def _mount_of_project(cfg: dict) -> str:
    """The remote path that file_mounts maps the project directory (".", where `ray up` runs) to."""
    remote = [r for r, local in cfg["file_mounts"].items() if (ROOT / local).resolve() == ROOT]
    assert len(remote) == 1, f"file_mounts must mount the project directory once: {cfg['file_mounts']}"
    return remote[0]


# --- Ray's validator -------------------------------------------------------------------

def test_raw_config_passes_rays_validator(config):
    validate_config(config)


def test_prepared_config_passes_rays_validator(prepared):
    """What `ray up` validates: the config merged with Ray's AWS defaults."""
    validate_config(prepared)
    assert prepared["provider"]["type"] == "aws"
    assert prepared["auth"]["ssh_user"] == "ubuntu"
    head = prepared["available_node_types"][prepared["head_node_type"]]
    assert head["max_workers"] == 0  # filled in by prepare_config
    assert all(t["max_workers"] <= prepared["max_workers"] for t in _workers(prepared).values())


def test_prepared_setup_commands_run_on_every_node(config, prepared):
    """prepare_config prepends setup_commands to the head's and the workers' own lists;
    an absent head_setup_commands would instead bring in Ray's default (pip install boto3)."""
    for key in ("head_setup_commands", "worker_setup_commands"):
        assert prepared[key][:len(config["setup_commands"])] == config["setup_commands"]


@pytest.mark.parametrize("break_it", [
    pytest.param(lambda c: c.__setitem__("max_wrokers", c.pop("max_workers")), id="misspelled-top-level-key"),
    pytest.param(lambda c: c.__setitem__("max_workers", "8"), id="max_workers-not-an-integer"),
    pytest.param(lambda c: _workers(c)["gpu_worker"]["resources"].__setitem__("GPU", 0.5),
                 id="fractional-node-resource"),
    pytest.param(lambda c: c["docker"].__setitem__("worker_imgae", c["docker"].pop("worker_image")),
                 id="misspelled-docker-key"),
    pytest.param(lambda c: c["available_node_types"]["head"].pop("resources"), id="node-type-without-resources"),
])
def test_schema_rejects_broken_copies(config, break_it):
    """The schema forbids unknown keys (additionalProperties: false) and checks types, so a
    typo in cluster.yaml fails before `ray up` starts anything."""
    broken = copy.deepcopy(config)
    break_it(broken)
    with pytest.raises(jsonschema.ValidationError):
        validate_config(broken)
    validate_config(config)  # the original is untouched and still valid


def test_cluster_synced_files_is_required(config):
    """Ray reads a missing cluster_synced_files as a laptop/cluster version mismatch, so the
    raw file must carry it even empty (prepare_config would fill it in from the defaults)."""
    del config["cluster_synced_files"]
    with pytest.raises(RuntimeError, match="cluster_synced_files"):
        validate_config(config)
    validate_config(prepare_config(config))


def test_max_workers_below_min_workers_rejected(config):
    _workers(config)["gpu_worker"]["min_workers"] = config["max_workers"] + 1
    with pytest.raises(ValueError, match="max_workers"):
        validate_config(config)


# --- what the sweep needs ----------------------------------------------------------------

def test_every_worker_type_has_a_gpu_and_fits_a_paper_trial(config):
    paper = SCALES["paper"]
    workers = _workers(config)
    assert workers
    for name, node in workers.items():
        res = node["resources"]
        assert res.get("GPU", 0) >= 1, f"{name} has no GPU"
        for dataset in ("cifar10", "imagenet"):
            cpus, gpus = paper.resources(dataset)
            assert res.get("GPU", 0) >= gpus and res.get("CPU", 0) >= cpus, \
                f"{name} {res} cannot host one paper-scale {dataset} trial ({cpus} CPU, {gpus} GPU)"
        assert node.get("min_workers", 0) == 0, "GPU workers should only run while trials wait"
        assert node["max_workers"] >= 1


def test_a_multi_gpu_worker_type_hosts_a_four_worker_trial(config, text):
    """A node type with 4 GPUs takes a whole 4-worker VQ-VAE-2 trial (its workers talk over NVLink/PCIe,
    not the network), and the documented command for it plans such trials."""
    from sweep.plan import make_plan

    multi = {name: node for name, node in _workers(config).items() if node["resources"].get("GPU", 0) >= 4}
    assert multi, "no multi-GPU worker type"
    plan = make_plan("robustness", "paper", overrides={"dataset": "imagenet", "data_dir": "/data"}, workers=4,
                     cpus=16, gpus=4)
    assert any(n["resources"]["GPU"] >= plan.gpus and n["resources"]["CPU"] >= plan.cpus for n in multi.values())
    assert "--workers-per-trial 4 --gpus-per-trial 4" in text


def test_head_takes_no_trials(config):
    """The head advertises no CPU/GPU, so trials (and other tasks) always go to GPU workers."""
    res = config["available_node_types"][config["head_node_type"]]["resources"]
    assert res.get("CPU") == 0 and res.get("GPU", 0) == 0


def _mlflow_args(cfg: dict) -> list[str]:
    """PORT, BACKEND_STORE_URI, ARTIFACTS_DESTINATION of the head's MLflow start (scripts/cluster/mlflow.sh)."""
    (command,) = [c for c in cfg["head_start_ray_commands"] if c.startswith(MLFLOW_SCRIPT)]
    return shlex.split(command.removeprefix(MLFLOW_SCRIPT))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_tracked_file_is_copied_to_the_nodes(path):
    """rsync_exclude patterns match at any depth (an unanchored "data/" dropped the package models/data/ and
    every trial failed to import it): only .git is excluded by name, the rest by .gitignore's anchored lines."""
    config = yaml.safe_load(path.read_text())
    assert config["rsync_exclude"] == [".git"] and config["rsync_filter"] == [".gitignore"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_both_configs_pass_rays_validator_and_share_the_node_commands(path):
    """Both validate as written and as `ray up` prepares them; both start MLflow through the shared script
    (which waits until it answers) after Ray, and end an earlier start's processes by their PIDs through
    the shared scripts/cluster/stop.py: no bare `ray stop` in any command of ours."""
    config = yaml.safe_load(path.read_text())
    validate_config(config)
    validate_config(prepare_config(copy.deepcopy(config)))
    head, workers = config["head_start_ray_commands"], config["worker_start_ray_commands"]
    for commands in (head, workers):
        assert commands[0] == "python ~/kohonen/scripts/cluster/stop.py"
        assert [i for i, c in enumerate(commands) if "ray start" in c] == [1]
    port, store, _ = _mlflow_args(config)
    assert port == "5000" and store.startswith("sqlite:///") and head[-1].startswith(MLFLOW_SCRIPT)
    every = [c for key in ("setup_commands", "head_setup_commands", "worker_setup_commands",
                           "initialization_commands", "head_start_ray_commands", "worker_start_ray_commands")
             for c in config.get(key, [])]
    assert not any(re.search(r"(^|[;&|]\s*)ray stop\b", c) for c in every), every
    script = (ROOT / "scripts" / "cluster" / "mlflow.sh").read_text()
    assert "--host 127.0.0.1" in script and "/health" in script and "exit 1" in script


def test_head_starts_ray_and_mlflow_on_port_5000(config):
    cmds = _head_commands(config)
    assert "ray start --head" in cmds and "--port=6379" in cmds
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in cmds
    assert _mlflow_args(config)[0] == "5000"


def test_services_listen_on_loopback_only(config, text):
    """MLflow and the Ray dashboard bind 127.0.0.1 of the head (reached through `ray attach -p 5000` and
    `ray dashboard`, which forward over SSH), never every interface."""
    cmds = _head_commands(config)
    assert "--dashboard-host=127.0.0.1" in cmds
    assert "0.0.0.0" not in text + (ROOT / "scripts" / "cluster" / "mlflow.sh").read_text()
    assert "ray attach cluster.yaml -p 5000" in text and "ray dashboard cluster.yaml" in text


def _policies(text: str) -> list[dict]:
    """The IAM policy documents of the ONE-TIME AWS SETUP comments, with the shell variables filled in."""
    import json

    setup = "\n".join(line.lstrip("# ") for line in text.splitlines() if line.startswith("#"))
    values = dict(re.findall(r"\b(B|CLUSTER)=([\w-]+)", setup))
    docs = []
    for raw in re.findall(r"'(\{\"Version\".*?\})'(?:\s|$)", setup, flags=re.S):
        raw = re.sub(r"'\$(\w+)'", lambda m: values[m.group(1)], raw)
        docs.append(json.loads(raw))
    return docs


def test_iam_is_scoped_to_the_sweep_bucket_and_the_autoscaler(text):
    """No AWS-managed FullAccess policy; S3 rights only on the sweep bucket (set once as B=...); the head's EC2
    rights are the calls Ray's AWS node provider makes, stop/terminate limited to this cluster's instances."""
    assert "attach-role-policy" not in text and "arn:aws:iam::aws:policy/" not in text  # no AWS-managed policy
    policies = _policies(text)
    statements = [st for p in policies for st in p["Statement"] if st.get("Effect") == "Allow"
                  and "sts:AssumeRole" not in st.get("Action", [])]
    s3 = [st for st in statements if any(a.startswith("s3:") for a in np_list(st["Action"]))]
    assert s3 and {r for st in s3 for r in np_list(st["Resource"])} == {"arn:aws:s3:::YOUR-BUCKET",
                                                                        "arn:aws:s3:::YOUR-BUCKET/*"}
    ec2 = {a for st in statements for a in np_list(st["Action"]) if a.startswith("ec2:")}
    assert ec2 and not any("*" in a for a in ec2)
    assert ec2 <= {"ec2:DescribeInstances", "ec2:DescribeInstanceTypes", "ec2:DescribeImages", "ec2:RunInstances",
                   "ec2:CreateTags", "ec2:StartInstances", "ec2:StopInstances", "ec2:TerminateInstances"}
    lifecycle = [st for st in statements if "ec2:TerminateInstances" in np_list(st["Action"])]
    assert lifecycle[0]["Condition"]["StringEquals"]["ec2:ResourceTag/ray-cluster-name"] == "kohonen-vq"
    pass_role = [st for st in statements if "iam:PassRole" in np_list(st["Action"])]
    assert pass_role and all(st["Resource"].endswith("role/kohonen-ray-worker") for st in pass_role)


def np_list(value) -> list:
    return value if isinstance(value, list) else [value]


def test_mlflow_store_paths_match_the_container_home(config):
    """sqlite and log paths must be under the container's home (/home/ray, not /home/ubuntu)
    and the db directory must be the one mounted from the head's disk."""
    cmds = _head_commands(config)
    _, backend, artifacts = _mlflow_args(config)
    assert backend.startswith(f"sqlite:///{DOCKER_HOME}/"), backend
    db_dir = str(Path(backend.removeprefix("sqlite:///")).parent)
    mounts = " ".join(config["docker"].get("head_run_options", []) + config["docker"].get("run_options", []))
    assert f":{db_dir}" in mounts, f"{db_dir} is not mounted from the host: {mounts}"
    assert artifacts.startswith("s3://")
    assert "/home/ubuntu" not in cmds


def test_workers_join_the_head(config):
    cmds = "\n".join(config["worker_start_ray_commands"])
    assert "ray start --address=$RAY_HEAD_IP:6379" in cmds


def test_project_is_mounted_and_installed(config):
    remote = _mount_of_project(config)
    assert remote in ("~/kohonen", f"{DOCKER_HOME}/kohonen")
    install = [c for c in config["setup_commands"] if "pip install" in c and "-e" in shlex.split(c)]
    assert install and any(remote in c or remote.replace("~", DOCKER_HOME) in c for c in install), \
        f"setup_commands must pip install -e {remote}: {config['setup_commands']}"
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert config["rsync_filter"] == [".gitignore"] and {"/results/", "/data/"} <= set(ignored), \
        "local results/ and data/ must not be uploaded"


def test_gpu_workers_keep_the_cuda_torch(config):
    """The CPU wheel (what a laptop installs first) would leave the GPUs idle."""
    cmds = "\n".join(config["setup_commands"] + config.get("worker_setup_commands", []))
    assert "whl/cpu" not in cmds and "+cpu" not in cmds


def test_docker_images_pin_this_ray_and_give_workers_the_gpu(config):
    docker = config["docker"]
    head_image = docker.get("head_image", docker.get("image"))
    worker_image = docker.get("worker_image", docker.get("image"))
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    for image in (head_image, worker_image):
        assert image.startswith("rayproject/ray"), image
        assert f":{ray.__version__}-" in image, f"{image} is not Ray {ray.__version__} (the laptop's)"
        assert py in image, f"{image} is not Python {py}"
    assert "gpu" in worker_image or "cu1" in worker_image
    worker_opts = " ".join(docker.get("run_options", []) + docker.get("worker_run_options", []))
    assert "--gpus all" in worker_opts
    assert docker["container_name"]


def test_documented_sweep_commands_plan(text, capsys):
    """Every `ray exec ... 'python -m sweep.run ...'` / `ray submit ... sweep/run.py -- ...` in the comments
    parses and plans (with --dry-run), e.g. `--scale paper` is refused without --data-dir."""
    from sweep.run import main

    commands = []
    for line in text.splitlines():
        if not line.lstrip().startswith("#") or not re.search(r"ray (exec|submit) ", line):
            continue
        m = re.search(r"python -m sweep\.run ([^']*)", line) or re.search(r"sweep/run\.py .*?-- (.*)$", line)
        if m and "--resume" not in m.group(1):
            commands.append(shlex.split(m.group(1)))
    assert len(commands) >= 2, f"cluster.yaml documents no ray exec / ray submit sweep command: {commands}"
    for args in commands:
        assert "--storage" in args and args[args.index("--storage") + 1].startswith("s3://")
        assert args[args.index("--tracking-uri") + 1] == "http://localhost:5000"
        assert main(args + ["--dry-run"]) == 0, args
    assert "trials" in capsys.readouterr().out
