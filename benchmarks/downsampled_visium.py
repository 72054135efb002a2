"""Protocol 2a, downsampled Visium: pool a Visium slide's spots into coarser pseudo-spots, super-resolve back.

Command-line entry point; the protocol, its options and outputs are described in ``srbench/downsampled_visium.py``
(``python benchmarks/downsampled_visium.py --help``).
"""

from srbench.downsampled_visium import main

if __name__ == "__main__":
    main()
