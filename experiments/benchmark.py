"""The agents x tasks x metrics benchmark (``textgym.benchmark``), run from a checkout.

    python experiments/benchmark.py --quick      # ~4 min on 2 CPU cores
    python experiments/benchmark.py              # the full budget, ~40 min

Its options, cells, resume and outputs are described in ``textgym/benchmark.py``. ``textgym bench``
runs the same from an installed package (its ``--out`` defaults to ./benchmark[_quick]).
"""

from textgym.benchmark import main

if __name__ == "__main__":
    main()
