"""Contextual bandits (TF-Agents) that choose which retrieved items are shown, learned from logs.

TF-Agents 0.19 only works on Keras 2, so Keras 2 must be selected before TensorFlow is first
imported; importing this package first is enough (see ../../shared/STACK.md).
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
