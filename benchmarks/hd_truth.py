"""Protocol 2b, high-resolution truth: aggregate fine bins into Visium-like spots, super-resolve, score at the bins.

Command-line entry point; the protocol, its options and outputs are described in ``srbench/hd_truth.py``
(``python benchmarks/hd_truth.py --help``).
"""

from srbench.hd_truth import main

if __name__ == "__main__":
    main()
