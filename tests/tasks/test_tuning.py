"""A model worker's process settings (tasks/tuning.py), each in a process of its own as a worker sets
them at start: the GIL's switch interval, and glibc's malloc serving a batch thread's buffers from the
process's one heap, where freed memory stays for the next forward pass, instead of from a fresh
`mmap` (or a thread arena of its own) whose pages fault in again every time."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

# Where malloc puts a 20 MiB buffer (a batch's activations) asked for in a pool thread: inside the
# process's brk heap ("[heap]" in /proc/self/maps) or not.
WHERE = textwrap.dedent("""
    import ctypes, json, sys
    from concurrent.futures import ThreadPoolExecutor
    from vlmq.settings import Settings
    from vlmq.tasks.tuning import tune

    tune(Settings(worker_malloc_reuse=sys.argv[1] == "1", gil_switch_ms=float(sys.argv[2]), torch_threads=1))
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]

    def buffer():
        address = libc.malloc(20 * 2**20)
        ctypes.memset(address, 1, 20 * 2**20)
        return address

    address = ThreadPoolExecutor(1).submit(buffer).result()
    heaps = [line.split()[0].split("-") for line in open("/proc/self/maps") if line.rstrip().endswith("[heap]")]
    in_heap = any(int(low, 16) <= address < int(high, 16) for low, high in heaps)
    libc.free(address)
    print(json.dumps({"in_heap": in_heap, "switch_s": sys.getswitchinterval()}))
""")


def run(reuse: bool, switch_ms: float) -> dict:
    out = subprocess.run([sys.executable, "-c", WHERE, "1" if reuse else "0", str(switch_ms)], capture_output=True,
                         text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_batch_threads_buffers_come_from_the_heap_kept_for_reuse():
    assert run(reuse=True, switch_ms=5)["in_heap"]
    # glibc's default: a thread arena of its own, or an mmap past the threshold (unmapped when freed)
    assert not run(reuse=False, switch_ms=5)["in_heap"]


def test_the_switch_interval_is_the_setting():
    assert run(reuse=True, switch_ms=0.5)["switch_s"] == 0.0005
    assert run(reuse=True, switch_ms=5)["switch_s"] == 0.005
