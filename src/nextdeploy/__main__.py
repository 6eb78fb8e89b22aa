from nextdeploy.cli.main import run

run()
