from pkgdepot.cli import run

run()
