"""Means of values over groups of items (spots' bins, spots' pixels, pooled spots), shared by every layer."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["deviation_from_group", "group_means", "lattice_groups"]


def group_means(values: np.ndarray, groups: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``values`` ``(..., n_items)`` over the items of each group, and the number of items per group.

    ``groups`` holds each item's group index in ``[0, n_groups)``. Empty groups get a mean of 0.

    Returns
    -------
    ``(means, counts)`` with shapes ``(..., n_groups)`` and ``(n_groups,)``.
    """
    counts = np.bincount(groups, minlength=n_groups)
    lead = values.shape[:-1]
    # Rows given explicitly: with no items (a block of the grid that holds no spot) ``-1`` cannot be inferred.
    flat = values.reshape(math.prod(lead), values.shape[-1])
    sums = (
        np.stack([np.bincount(groups, row, minlength=n_groups) for row in flat])
        if flat.size
        else np.zeros((len(flat), n_groups))
    )
    return sums.reshape(*lead, n_groups) / np.maximum(counts, 1), counts


def lattice_groups(centres: np.ndarray, *, side: float, offset: float = 0.0) -> np.ndarray:
    """Group index of each point ``(n, 2)`` by the cell of a square lattice of ``side`` (shifted by ``offset``)."""
    cell = np.floor((centres - centres.min(axis=0) + np.asarray(offset)) / side).astype(np.int64)
    _, group = np.unique(cell, axis=0, return_inverse=True)
    return group.ravel()


def deviation_from_group(values: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """Each item's ``values`` ``(n_items, ...)`` minus the mean of its group's."""
    means, _ = group_means(values.T, group, n_groups)
    return values - means.T[group]
