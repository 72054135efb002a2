"""The benchmarks' own library: what the scripts in ``benchmarks/`` share, importable as a package.

- ``protocol``: methods (baselines, peers, sr_spatial), per-gene metrics, child processes, results pages.
- ``her2st``, ``downsampled_visium``, ``hd_truth``: the three ground-truth protocols (readers, pooling, tasks).
- ``reference``: reference bins drawn from the demo slide's hidden truth.
- ``report``: the Markdown table and machine line of every results page.
- ``peer_worker``: run in the peers' environment as a script (never imports sr_spatial).

The scripts ``benchmarks/*.py`` are thin command-line entry points; run as ``python benchmarks/x.py``, their folder
is on ``sys.path`` and ``import srbench`` works. Tests import it through pytest's ``pythonpath``. Nothing here
imports a private module of sr_spatial or calls a private method (``tests/test_structure.py`` checks it).
"""
