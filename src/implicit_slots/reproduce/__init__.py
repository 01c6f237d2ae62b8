"""Reproduce the paper's tables and figures: configs -> runs over seeds -> statistics, plots, tables.

``implicit-slots reproduce NAME`` (see :mod:`implicit_slots.cli.reproduce`) joins the three parts:

- :mod:`~implicit_slots.reproduce.experiments`: which configs make up each table / figure, and the
  paper's numbers;
- :mod:`~implicit_slots.reproduce.runs`: plan, train, resume, evaluate (subprocesses, J at a time);
- :mod:`~implicit_slots.reproduce.aggregate`, :mod:`~implicit_slots.reproduce.report`: mean ± std over
  seeds from ``metrics.jsonl`` and ``eval/metrics.json``, the PNG figure and the Markdown table.
"""

from implicit_slots.reproduce.experiments import EXPERIMENTS, Experiment, get_experiment

__all__ = ["EXPERIMENTS", "Experiment", "get_experiment"]
