"""The cutover host's pieces: the plan says which stack answers each route and runs each task."""

from .plan import METHODS, MODES, OWNERS, SAFE_METHODS, Plan, Route

__all__ = ["METHODS", "MODES", "OWNERS", "SAFE_METHODS", "Plan", "Route"]
