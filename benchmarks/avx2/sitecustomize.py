"""Makes an AVX-512 machine run vLLM's CPU build the way an AVX2-only CPU does.

On ``PYTHONPATH`` (``benchmarks/cpu_settings.py --emulate-avx2`` puts it there) it makes
torch report no AVX-512 (so vLLM loads its ``_C_AVX2`` kernels and the KV-cache/attention
code takes the AVX2 path), and the environment set beside it limits ATen's kernels
(``ATEN_CPU_CAPABILITY=avx2``) and oneDNN's (``ONEDNN_MAX_CPU_ISA=AVX2``). The silicon is
still the faster one: figures under it approximate an AVX2 CPU's, they are not one's.
"""

import os

if os.environ.get("VBATCH_EMULATE_AVX2") == "1":
    import importlib.abc
    import sys

    def _patch(torch_cpu: object) -> None:
        for probe in ("_is_avx512_supported", "_is_avx512_bf16_supported",
                      "_is_amx_tile_supported"):
            setattr(torch_cpu, probe, lambda: False)

    class _PatchTorchCpu(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):  # type: ignore[no-untyped-def]
            if name != "torch.cpu":
                return None
            sys.meta_path.remove(self)
            try:
                import importlib.util
                spec = importlib.util.find_spec(name)
            finally:
                sys.meta_path.insert(0, self)
            if spec is None or spec.loader is None:
                return spec
            loader = spec.loader
            original = loader.exec_module  # type: ignore[attr-defined]

            def exec_module(module):  # type: ignore[no-untyped-def]
                original(module)
                _patch(module)

            loader.exec_module = exec_module  # type: ignore[attr-defined]
            return spec

    sys.meta_path.insert(0, _PatchTorchCpu())
