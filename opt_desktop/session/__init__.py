"""Runs as plain data: accumulated from engine events, read by views and files. Qt-free."""

from .trace import RunTrace

__all__ = ["RunTrace"]
