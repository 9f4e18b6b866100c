"""kitting-reconciler: a declarative GitOps reconciler for PC kitting servers."""

__version__ = "0.1.0"
