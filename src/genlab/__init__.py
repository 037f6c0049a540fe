"""genlab: the science of how neural networks generalize and how their training can be shaped."""

import os

# Never touch the network at run time: set before transformers/huggingface_hub is imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# MKL's conditional numerical reproducibility (CNR): without it MKL may pick another code path
# or work split from one process to the next, and a LAPACK solve then rounds differently. One
# grokking smoke run's nHSIC(Z;X) at step 0 came out 3.3813155429 in one process and
# 3.3813154804 in another on the CI machine (the kernel solve is ill-conditioned, so the last
# bits grow to 1e-8), which broke "a resumed run equals an uninterrupted one". AUTO keeps the
# fastest code path for the CPU (same speed and, on our Intel machines, the same bits as
# before); MKL reads the variable at its first call, so this works as long as genlab is imported
# before torch first multiplies a matrix. A user's own MKL_CBWR wins.
os.environ.setdefault("MKL_CBWR", "AUTO")

__version__ = "0.1.0"


def _flush_denormals() -> None:
    """Flush subnormal floats to zero on the CPU, in every torch thread.

    With weight decay, weights and gradients drift into the subnormal range late in training
    (grokking runs especially), and CPU arithmetic on subnormals is many times slower: the
    modular-transformer preset went from 48 to 137 ms per step after grokking. The flag lives
    in each thread's MXCSR register and worker threads copy it when they are created, so it is
    set here, on import, before torch starts its intra-op thread pool. Values below ~1e-38
    (float32) become 0, which nothing a study measures can see.
    """
    import torch

    torch.set_flush_denormal(True)


def _fix_thread_count() -> None:
    """Pin the intra-op thread count, which also turns off MKL's dynamic threading.

    Left dynamic (MKL's default until ``torch.set_num_threads`` is first called), MKL picks its
    thread count per call from the machine's load, and a threaded LAPACK solve then sums in
    another order: nHSIC(Z;X) of one grokking run differed at 1e-8 between two processes, which
    breaks the bit-for-bit equality of a resumed run (a new process) with an uninterrupted one.
    """
    import torch

    torch.set_num_threads(torch.get_num_threads())


_flush_denormals()
_fix_thread_count()
