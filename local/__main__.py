from local.server import main

if __name__ == "__main__":  # not when a function's execution environment is spawned from it
    main()
