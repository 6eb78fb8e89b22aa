from nextdeploy.cli.main import main

main()
