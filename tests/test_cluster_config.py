"""cluster.yaml (AWS) and cluster-local.yaml (Ray's `local` provider): offline checks.

1. Ray's own check, as `ray up` does it before touching any machine: ``prepare_config`` (merges the
   provider's defaults.yaml, the setup commands and per-type worker bounds) then ``validate_config``
   (Ray's JSON schema + head type / worker-count consistency), both from ``ray.autoscaler._private.util``.
   Both run offline for `aws` too: prepare_config only reads ray/autoscaler/aws/defaults.yaml; neither
   imports boto3 nor calls AWS. (`ray up` then runs the AWS bootstrap -- key pair, IAM role, subnets,
   security group -- which needs credentials and is not exercised here.)
2. What Ray's schema does not look at (node_config, provider keys, command contents): the project's checks.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
AWS = ROOT / "cluster.yaml"
LOCAL = ROOT / "cluster-local.yaml"
RAY_PORTS = (8265, 6379, 10001)  # dashboard / job server, GCS, Ray client

# RunInstances parameters this project uses or documents (catches typos Ray's schema lets through).
EC2_NODE_CONFIG_KEYS = {
    "InstanceType",
    "ImageId",
    "BlockDeviceMappings",
    "InstanceMarketOptions",
    "KeyName",
    "SecurityGroupIds",
    "SubnetIds",
    "IamInstanceProfile",
    "TagSpecifications",
    "Placement",
}
# (vCPUs, GPUs) of the instance types the file names: `resources` may not promise more than the machine has.
INSTANCE_SHAPES = {"m6i.xlarge": (4, 0), "g5.xlarge": (4, 1), "c6i.4xlarge": (16, 0)}


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def ray_checked(raw: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = prepare_config(copy.deepcopy(raw))
    validate_config(cfg)
    return cfg


def all_commands(cfg: dict) -> list[str]:
    keys = (
        "initialization_commands",
        "setup_commands",
        "head_setup_commands",
        "worker_setup_commands",
        "head_start_ray_commands",
        "worker_start_ray_commands",
    )
    cmds = [c for k in keys for c in cfg.get(k) or []]
    for node_type in (cfg.get("available_node_types") or {}).values():
        for k in ("initialization_commands", "worker_setup_commands"):
            cmds += node_type.get(k) or []
    return cmds


def open_ray_ports_to_world(cfg: dict) -> list[str]:
    """Ingress rules that let any address (0.0.0.0/0 or ::/0) reach a Ray port."""
    problems = []
    rules = (cfg.get("provider", {}).get("security_group") or {}).get("IpPermissions") or []
    for rule in rules:
        world = [r.get("CidrIp") for r in rule.get("IpRanges", [])] + [
            r.get("CidrIpv6") for r in rule.get("Ipv6Ranges", [])
        ]
        if not {"0.0.0.0/0", "::/0"} & set(world):
            continue
        if str(rule.get("IpProtocol")) == "-1":
            problems.append(f"all traffic from {world}")
            continue
        lo, hi = rule.get("FromPort", -1), rule.get("ToPort", -1)
        problems += [f"port {p} from {world}" for p in RAY_PORTS if lo == -1 or lo <= p <= hi]
    for cmd in cfg.get("head_start_ray_commands") or []:
        if re.search(r"--dashboard-host[= ]0\.0\.0\.0", cmd):
            problems.append(f"dashboard bound to every interface: {cmd!r}")
    return problems


def secrets(text: str) -> list[str]:
    found = []
    for pattern, what in [
        (r"(?i)aws_access_key|aws_secret|secret_access_key|aws_session_token", "AWS credential key name"),
        (r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", "AWS access key id"),
        (r"(?<!\d)\d{12}(?!\d)", "12-digit number (AWS account id?)"),
        (r"-----BEGIN [A-Z ]*PRIVATE KEY-----", "private key"),
    ]:
        found += [f"{what}: {m.group(0)!r}" for m in re.finditer(pattern, text)]
    return found


@pytest.fixture(scope="module")
def aws_raw():
    return load(AWS)


@pytest.fixture(scope="module")
def local_raw():
    return load(LOCAL)


# -- Ray's own validation ------------------------------------------------------------------------


@pytest.mark.parametrize("path", [AWS, LOCAL], ids=["aws", "local"])
def test_ray_schema_accepts(path):
    ray_checked(load(path))


def test_ray_schema_catches_what_we_rely_on(aws_raw):
    """The validation above is not vacuous: Ray rejects a typo'd key and a node type without resources."""
    import jsonschema

    typo = copy.deepcopy(aws_raw)
    typo["idle_timeout_minute"] = typo.pop("idle_timeout_minutes")
    with pytest.raises(jsonschema.ValidationError):
        ray_checked(typo)
    no_resources = copy.deepcopy(aws_raw)
    del no_resources["available_node_types"]["cpu_rollout"]["resources"]
    with pytest.raises(jsonschema.ValidationError):
        ray_checked(no_resources)
    too_few = copy.deepcopy(aws_raw)
    too_few["max_workers"] = 1  # < sum of min_workers (1 GPU + 1 CPU)
    with pytest.raises(ValueError):
        ray_checked(too_few)


def test_local_config_targets_this_machine(local_raw):
    provider = local_raw["provider"]
    assert provider["type"] == "local"
    assert provider["head_ip"] == "127.0.0.1" and provider["worker_ips"] == []


# -- project checks ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [AWS, LOCAL], ids=["aws", "local"])
def test_setup_installs_this_project_with_pinned_constraints(path):
    cfg = load(path)
    mounts = cfg["file_mounts"]
    remote = next(r for r, local in mounts.items() if (ROOT / local).resolve() == ROOT)  # the repo is mounted
    cmds = cfg["setup_commands"]
    installs = [
        c
        for c in cmds
        if re.search(r"pip install\b", c)
        and re.search(rf"-c {re.escape(remote)}/constraints\.txt\b", c)
        and re.search(rf"-e {re.escape(remote)}(\s|$)", c)
    ]
    assert installs, f"no `pip install -c {remote}/constraints.txt -e {remote}` in setup_commands: {cmds}"
    assert (ROOT / "constraints.txt").is_file() and (ROOT / "configs").is_dir()
    # every pip install on the nodes goes through the pinned constraints
    for c in all_commands(cfg):
        if "pip install" in c:
            assert "constraints.txt" in c, c


def test_both_files_share_setup_commands(aws_raw, local_raw):
    assert aws_raw["setup_commands"] == local_raw["setup_commands"]
    assert aws_raw["file_mounts"] == local_raw["file_mounts"]


@pytest.mark.parametrize("path", [AWS, LOCAL], ids=["aws", "local"])
def test_no_secrets(path):
    text = path.read_text()
    assert secrets(text) == []
    cfg = load(path)
    auth = cfg.get("auth", {})
    assert set(auth) <= {"ssh_user", "ssh_private_key"}, auth


def test_secret_scan_is_not_vacuous():
    assert secrets("aws_access_key_id: x") and secrets("Owner: 123456789012") and secrets("AKIAABCDEFGHIJKLMNOP")
    assert not secrets("VolumeSize: 100\nami-REPLACE-ME\n--port=46379")


@pytest.mark.parametrize("path", [AWS, LOCAL], ids=["aws", "local"])
def test_ray_ports_not_open_to_the_internet(path):
    assert open_ray_ports_to_world(ray_checked(load(path))) == []


def test_port_check_is_not_vacuous():
    def cfg(*rules, cmd="ray start --head"):
        return {"provider": {"security_group": {"IpPermissions": list(rules)}}, "head_start_ray_commands": [cmd]}

    world = {"IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
    assert open_ray_ports_to_world(cfg({"IpProtocol": "tcp", "FromPort": 8265, "ToPort": 8265, **world}))
    assert open_ray_ports_to_world(cfg({"IpProtocol": "tcp", "FromPort": 6000, "ToPort": 11000, **world}))
    assert open_ray_ports_to_world(cfg({"IpProtocol": "-1", **world}))
    assert open_ray_ports_to_world(
        cfg({"IpProtocol": "tcp", "FromPort": 10001, "ToPort": 10001, "Ipv6Ranges": [{"CidrIpv6": "::/0"}]})
    )
    assert open_ray_ports_to_world(cfg(cmd="ray start --head --dashboard-host=0.0.0.0"))
    assert not open_ray_ports_to_world(cfg({"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, **world}))
    assert not open_ray_ports_to_world(
        cfg({"IpProtocol": "tcp", "FromPort": 8265, "ToPort": 8265, "IpRanges": [{"CidrIp": "10.0.0.0/16"}]})
    )


def test_dashboard_on_loopback(aws_raw, local_raw):
    for cfg in (aws_raw, local_raw):
        head = " ".join(cfg["head_start_ray_commands"])
        assert "--dashboard-host=127.0.0.1" in head, head


def test_every_node_type_has_explicit_resources(aws_raw):
    """In the raw file, as written: nothing left to Ray's detection (the local provider is the exception:
    Ray forbids node types there and detects the head's resources itself)."""
    for name, node_type in aws_raw["available_node_types"].items():
        res = node_type.get("resources")
        assert isinstance(res, dict) and "CPU" in res, f"{name}: resources must name CPU explicitly, got {res!r}"


def test_gpu_node_type_for_the_learner(aws_raw):
    gpu_types = {n: t for n, t in aws_raw["available_node_types"].items() if t["resources"].get("GPU", 0) >= 1}
    assert gpu_types, "no node type with a GPU"
    assert any(t["resources"].get("learner", 0) >= 1 and t.get("min_workers", 0) >= 1 for t in gpu_types.values()), (
        "the learner's GPU node must be up when `metarl train` starts (min_workers >= 1, resource `learner`)"
    )
    cpu_types = [
        t
        for n, t in aws_raw["available_node_types"].items()
        if n != aws_raw["head_node_type"] and t["resources"].get("GPU", 0) == 0
    ]
    assert cpu_types and all(t["max_workers"] > t.get("min_workers", 0) >= 1 for t in cpu_types), (
        "a CPU node type for rollouts with autoscaling bounds"
    )


def test_aws_node_configs(aws_raw):
    assert aws_raw["provider"]["type"] == "aws"  # the EC2 keys below are what Ray's AWS provider reads
    for name, node_type in aws_raw["available_node_types"].items():
        nc = node_type["node_config"]
        assert set(nc) <= EC2_NODE_CONFIG_KEYS, f"{name}: unknown node_config keys {set(nc) - EC2_NODE_CONFIG_KEYS}"
        assert nc.get("ImageId"), f"{name}: set ImageId (Ray's default AMI is too old for torch 2.13)"
        shape = INSTANCE_SHAPES.get(nc["InstanceType"])
        if shape:
            cpus, gpus = shape
            assert node_type["resources"].get("CPU", 0) <= cpus, f"{name}: more CPUs than {nc['InstanceType']} has"
            assert node_type["resources"].get("GPU", 0) == gpus, f"{name}: GPU count != {nc['InstanceType']}'s"


def test_idle_timeout_sensible(aws_raw):
    assert 1 <= aws_raw["idle_timeout_minutes"] <= 60


def test_local_config_is_safe_on_a_shared_machine(local_raw):
    """`ray stop` kills every Ray process its user may signal: never in commands meant for this machine,
    and the SSH user (whom `ray down`'s built-in `ray stop` runs as) is not root."""
    assert local_raw["auth"]["ssh_user"] not in ("root", "")
    for c in all_commands(ray_checked(local_raw)):
        assert not re.search(r"\bray stop\b", c), c
    head = " ".join(local_raw["head_start_ray_commands"])
    assert re.search(r"--port=(?!6379\b)\d+", head), "the local head needs its own GCS port"
    assert "--dashboard-port=" in head and "--temp-dir=" in head
    assert any("RAY_TMPDIR" in c for c in local_raw["head_setup_commands"])


@pytest.mark.parametrize("name", ["train", "evaluate", "plot"])
def test_entry_point_scripts_forward_to_cli(name, monkeypatch):
    """scripts/NAME.py ARGS == metarl NAME ARGS (for `ray submit` / `ray job submit`), exit status included."""
    import runpy

    import metarl.cli

    seen = []
    monkeypatch.setattr(metarl.cli, "main", lambda argv: seen.append(argv) or 3)
    monkeypatch.setattr("sys.argv", [f"scripts/{name}.py", "a.yaml", "--set", "x=1"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(ROOT / "scripts" / f"{name}.py"), run_name="__main__")
    assert seen == [[name, "a.yaml", "--set", "x=1"]] and exit_.value.code == 3
