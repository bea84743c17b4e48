"""Peak memory of a block of work, shared by the benchmarks."""
import threading
import time


class PeakRSS:
    """Peak resident memory of this process during a ``with`` block, sampled every 20 ms, and the CUDA
    peak where a GPU is present. After the block: ``base`` and ``peak`` (bytes), ``rss_peak_mib``,
    ``rss_growth_mib`` and ``cuda_peak_mib`` (None without CUDA)."""

    def __enter__(self):
        import psutil
        import torch
        self.proc, self.peak, self.stop = psutil.Process(), 0, False
        self.base = self.proc.memory_info().rss
        self.cuda = torch.cuda.is_available()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()
        return self

    def _run(self):
        while not self.stop:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.02)

    def __exit__(self, *exc):
        import torch
        self.stop = True
        self.t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)
        self.rss_peak_mib = self.peak / 2**20
        self.rss_growth_mib = (self.peak - self.base) / 2**20
        self.cuda_peak_mib = torch.cuda.max_memory_allocated() / 2**20 if self.cuda else None
