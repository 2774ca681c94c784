"""``python -m onnxsmith`` runs the same CLI as the ``onnxsmith`` command."""

from onnxsmith.cli.main import run

if __name__ == "__main__":
    run()
