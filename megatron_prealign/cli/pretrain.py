"""Entry point: `torchrun --nproc-per-node N -m megatron_prealign.pretrain ARGS` (or the
`prealign-pretrain` console script). See `--help` and README.md."""

import sys


def main(argv=None) -> int:
    from megatron_prealign.errors import ConfigError, report
    from megatron_prealign.training import arguments

    try:
        config = arguments.parse_config(argv)
        from megatron_prealign.training import loop  # torch, megatron-core: after --help / bad flags

        loop.run(config)
    except ConfigError as error:  # only the project's own: anything else keeps its traceback
        return report(str(error))
    return 0


if __name__ == "__main__":  # the guard matters: dist_checkpointing re-imports __main__
    sys.exit(main())
