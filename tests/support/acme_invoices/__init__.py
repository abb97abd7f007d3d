"""A handler package from outside orderflow's own packages (orderflow/, ingest/, worker/), as a user
keeps one in their own repository: the image tests build a worker image with it
(`make images HANDLERS=...`, scripts/images/Dockerfile.handlers) and run its `invoice` type in the
chart's played manifests (tests/images/test_kube_play.py)."""
