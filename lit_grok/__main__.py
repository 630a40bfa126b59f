from lit_grok.cli import main

if __name__ == "__main__":  # the DDP launcher re-executes this module
    main()
