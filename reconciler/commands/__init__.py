"""One module per `kitctl` subcommand; each exposes `register(subparsers)`."""
