"""Makes an AVX-512 machine run vbatch and vLLM's CPU build the way an AVX2-only CPU does.

With ``VBATCH_EMULATE_AVX2=1`` and this folder on ``PYTHONPATH`` (``avx2_env()`` in
``benchmarks/cpu_settings.py`` gives both, plus the two below), every Python process:
torch reports no AVX-512 (so vLLM loads its ``_C_AVX2`` kernels and its attention takes the
AVX2 path) and vbatch sees no AVX-512/AMX flags (so it picks float32). The environment set
beside it limits ATen's kernels (``ATEN_CPU_CAPABILITY=avx2``) and oneDNN's
(``ONEDNN_MAX_CPU_ISA=AVX2``). The silicon is still the faster one: figures under it
approximate an AVX2 CPU's, they are not one's (measured: about 2x faster than a Zen 3).

    VBATCH_EMULATE_AVX2=1 PYTHONPATH=benchmarks/avx2 ATEN_CPU_CAPABILITY=avx2 \
        ONEDNN_MAX_CPU_ISA=AVX2 make test
"""

import os

if os.environ.get("VBATCH_EMULATE_AVX2") == "1":
    import dataclasses
    import importlib.abc
    import importlib.util
    import sys

    def _patch_torch_cpu(module):  # type: ignore[no-untyped-def]
        for probe in ("_is_avx512_supported", "_is_avx512_bf16_supported",
                      "_is_amx_tile_supported"):
            setattr(module, probe, lambda: False)

    def _patch_vbatch_cpu(module):  # type: ignore[no-untyped-def]
        real = module.cpu_info

        def cpu_info():  # type: ignore[no-untyped-def]
            info = real()
            flags = frozenset(f for f in info.flags if not f.startswith(("avx512", "amx")))
            return dataclasses.replace(info, flags=flags)

        module.cpu_info = cpu_info

    _PATCHES = {"torch.cpu": _patch_torch_cpu, "vbatch.servers.cpu": _patch_vbatch_cpu}

    class _Patcher(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):  # type: ignore[no-untyped-def]
            patch = _PATCHES.get(name)
            if patch is None:
                return None
            sys.meta_path.remove(self)
            try:
                spec = importlib.util.find_spec(name)
            finally:
                sys.meta_path.insert(0, self)
            if spec is None or spec.loader is None:
                return spec
            execute = spec.loader.exec_module  # type: ignore[attr-defined]

            def exec_module(module):  # type: ignore[no-untyped-def]
                execute(module)
                patch(module)

            spec.loader.exec_module = exec_module  # type: ignore[attr-defined]
            return spec

    sys.meta_path.insert(0, _Patcher())
