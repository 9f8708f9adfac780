"""The deploy files for the real tensorflow/serving image stay consistent with the local server."""
from __future__ import annotations

import os

import yaml

from musicrec.serving import flags
from musicrec.serving.server_options import read_batching_parameters, read_monitoring_config

DEPLOY = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "serving",
                      "deploy")
IMAGE = "tensorflow/serving:2.17.1"  # TensorFlow 2.17, as setup.py pins


def load(*parts: str) -> list[dict]:
    with open(os.path.join(DEPLOY, *parts), encoding="utf-8") as handle:
        return [document for document in yaml.safe_load_all(handle) if document]


def test_kubernetes_deployment_probes_rest_status_and_uses_known_flags():
    (deployment,) = load("kubernetes", "deployment.yaml")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == IMAGE
    probe = container["readinessProbe"]["httpGet"]
    assert probe["path"].startswith("/v1/models/") and probe["port"] == "rest"
    # Every flag the real binary gets is one the local server understands too.
    args = [arg for arg in container["args"] if not arg.startswith("--model_config_file=")]
    parsed = flags.build_parser().parse_args(args + ["--model_base_path=/unused"])
    assert parsed.rest_api_port == 8501 and parsed.enable_batching
    (service,) = load("kubernetes", "service.yaml")
    assert {port["port"] for port in service["spec"]["ports"]} == {8500, 8501}
    (config_map,) = load("kubernetes", "configmap.yaml")
    assert set(config_map["data"]) == {"batching.config", "monitoring.config"}


def test_compose_mounts_the_base_path_at_the_same_path():
    (compose,) = load("docker-compose.yml")
    service = compose["services"]["tensorflow-serving"]
    assert service["image"] == IMAGE
    assert "${MUSICREC_SERVING_BASE}:${MUSICREC_SERVING_BASE}:ro" in service["volumes"]
    assert all(port.startswith("127.0.0.1:") for port in service["ports"])


def test_config_files_parse_with_the_local_readers():
    assert read_batching_parameters(os.path.join(DEPLOY, "batching.config")).max_batch_size == 32
    assert read_monitoring_config(os.path.join(DEPLOY, "monitoring.config")) == "/monitoring/prometheus/metrics"
