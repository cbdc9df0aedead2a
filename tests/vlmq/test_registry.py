"""The model registry: the shipped file, overrides, checkpoints, and errors at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from vlmq.jobtypes import JobType
from vlmq.registry import RegistryError, discover_checkpoints, load_registry
from vlmq.settings import Settings


def test_shipped_registry_names_every_demo_job_type(tmp_path: Path) -> None:
    registry = load_registry(Settings(data_dir=tmp_path))
    for task in (JobType.caption, JobType.vqa, JobType.detect, JobType.chat):
        assert registry.for_task(task), task
    assert registry.get("blip-base").resolved_source(Settings(data_dir=tmp_path)) == str(
        tmp_path / "demo-models" / "blip-base"
    )


def test_env_override_merges_per_field(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, models={"blip-base": {"source": "Salesforce/blip-image-captioning-base"}})
    spec = load_registry(settings).get("blip-base")
    assert spec.source == "Salesforce/blip-image-captioning-base"
    assert spec.adapter == "blip_caption"  # the rest of the entry is kept
    assert spec.resolved_source(settings) == "Salesforce/blip-image-captioning-base"


def test_checkpoints_register_sorted_by_step(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for step in (1000, 20, 300):
        (runs / f"checkpoint-{step}").mkdir(parents=True)
    (runs / "checkpoint-final").mkdir()
    (runs / "notes.txt").write_text("x")
    assert [s for s, _ in discover_checkpoints(runs)] == [20, 300, 1000]
    registry_file = tmp_path / "models.toml"
    registry_file.write_text(
        f'[checkpoints.ft]\ndir = "{runs}"\nadapter = "image_text_to_text"\ntasks = ["chat"]\n'
    )
    registry = load_registry(Settings(data_dir=tmp_path, models_file=registry_file))
    assert registry.names == ["ft@20", "ft@300", "ft@1000"]
    assert registry.get("ft@300").checkpoint_step == 300


@pytest.mark.parametrize(
    "body",
    [
        '[models.x]\nadapter = "a"\nsource = "s"\ntasks = []\n',
        '[models.x]\nadapter = "a"\nsource = "s"\ntasks = ["compare"]\n',
        '[models.x]\nadapter = "a"\nsource = "s"\ntasks = ["caption"]\nmax_batch_size = 0\n',
        '[models.x]\nadapter = "a"\nsource = "s"\ntasks = ["caption"]\ntypo = 1\n',
        '[models.X_Y]\nadapter = "a"\nsource = "s"\ntasks = ["caption"]\n',
        '[weird]\n',
        'not toml',
        '[models.x]\nadapter = "a"\nsource = "s"\ntasks = ["caption"]\n[groups.g]\nmodels = ["x", "y"]\n',
        '[models.x]\nadapter = "a"\nsource = "s"\ntasks = ["caption"]\n[groups.g]\nmodels = []\n',
        '[models.x]\nadapter = "a"\nsource = "s"\ntasks = ["caption"]\n[groups.g]\n',
        '[models.x]\nadapter = "a"\nsource = "s"\ntasks = ["caption"]\n[groups.g]\nmodels = ["x"]\ncheckpoints = "c"\n',
        '[groups.g]\ncheckpoints = "nowhere"\n',
        '[models.x]\nadapter = "a"\nsource = "s"\ntasks = ["caption"]\n[groups.g]\nmodels = ["x"]\nmax_loaded = 0\n',
    ],
)
def test_bad_registry_is_a_start_up_error(tmp_path: Path, body: str) -> None:
    registry_file = tmp_path / "models.toml"
    registry_file.write_text(body)
    with pytest.raises(RegistryError):
        load_registry(Settings(data_dir=tmp_path, models_file=registry_file))


def test_a_group_from_checkpoints_or_a_list_with_overrides(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for step in (100, 200):
        (runs / f"checkpoint-{step}").mkdir(parents=True)
    registry_file = tmp_path / "models.toml"
    registry_file.write_text(
        f'[models.x]\nadapter = "blip_caption"\nsource = "s"\ntasks = ["caption"]\n'
        f'[checkpoints.ft]\ndir = "{runs}"\nadapter = "image_text_to_text"\ntasks = ["chat"]\n'
        f'[groups.ft]\ncheckpoints = "ft"\nmax_loaded = 1\n'
        f'[groups.mixed]\nmodels = ["x", "ft@200"]\nmax_memory_gb = 0.5\n'
    )
    registry = load_registry(Settings(data_dir=tmp_path, models_file=registry_file,
                                      groups={"ft": {"max_loaded": 3, "workers": 2}}))
    ft, mixed = registry.groups["ft"], registry.groups["mixed"]
    assert ft.members == ("ft@100", "ft@200") and (ft.max_loaded, ft.workers) == (3, 2)
    assert mixed.members == ("x", "ft@200") and mixed.max_memory_bytes == 2**29 and mixed.max_loaded == 4
    assert registry.group_of("ft@200") == "ft" and registry.group_of("x") == "mixed"


def test_the_shipped_registry_serves_the_checkpoints_as_a_group(tmp_path: Path) -> None:
    for step in (100, 200):
        (tmp_path / "demo-models" / "llava-ft" / f"checkpoint-{step}").mkdir(parents=True)
    group = load_registry(Settings(data_dir=tmp_path)).groups["llava-ft"]
    assert group.members == ("llava-ft@100", "llava-ft@200")
