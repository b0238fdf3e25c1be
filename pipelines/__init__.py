"""The stages as plain functions over artifacts, imported as ``mmiris.pipelines``.

This folder is the package ``mmiris.pipelines``: ``mmiris/pipelines`` links here in a
checkout and a wheel carries it there (docs/architecture.md). Import it by that name only.
"""

if __name__ != "mmiris.pipelines":  # a checkout's folder found as a top-level package
    raise ImportError(f"import the stages as mmiris.pipelines, not {__name__} (docs/architecture.md)")
