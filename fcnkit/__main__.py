"""Command line: `python -m fcnkit train | predict | course ...`."""

from __future__ import annotations

import argparse
import json
import sys

from fcnkit import predict


def _train_parser(subparsers):
    parser = subparsers.add_parser(
        "train",
        help="train a model on a bundled dataset",
        description=(
            "Train a model on random crops of a bundled dataset and write "
            "model.keras, history.csv, metrics.json, report.png and a "
            "checkpoint per epoch to --out. Uses the GPU and mixed precision "
            "when one is present, and several GPUs with --strategy mirrored."
        ),
    )
    parser.add_argument("--dataset", default="nuclei", help="nuclei or text_deblur")
    parser.add_argument("--model", default="unet", help="unet, plain_cnn, fcn (FCN-8s) or segnet")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", default="runs/train", help="output folder")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its last checkpoint, up to "
                        "--epochs in total; every other option must be the run's (a "
                        "changed one is refused, naming both values)")
    parser.add_argument("--crop-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps-per-epoch", type=int, default=25)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--batch-norm", action="store_true",
                        help="batch normalisation in the U-Net or the SegNet")
    parser.add_argument("--loss", default=None,
                        help="segmentation: crossentropy (the default), dice, jaccard (the "
                        "lecture's j) or jaccard2 (j2); restoration: mean_absolute_error")
    parser.add_argument("--weight-map", action="store_true",
                        help="weight each pixel's cross-entropy by the U-Net border weight "
                        "map of its mask (segmentation, --loss crossentropy)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2))
    parser.add_argument("--mixed-precision", action=argparse.BooleanOptionalAction,
                        default=None,
                        help="float16 compute with float32 weights; default: on when "
                        "there is a GPU. Recorded: a resumed run must keep it")
    parser.add_argument("--jit-compile", action=argparse.BooleanOptionalAction,
                        default=None,
                        help="compile the training step with XLA; default: Keras' auto "
                        "(on a GPU, not on a CPU nor with --strategy mirrored)")
    parser.add_argument("--strategy", default=None,
                        help="none (one device, the default) or mirrored (one replica per "
                        "GPU; --batch-size is the global batch, split across them)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["course"]:
        from fcnkit import course

        return course.main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m fcnkit",
        description="fcnkit: train models, predict large images, and build, check "
        "and grade the course (`python -m fcnkit course --help`).",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    _train_parser(subparsers)
    predict.add_parser(subparsers)
    subparsers.add_parser("course", help="build, check and grade the lessons")
    args = parser.parse_args(argv)
    if args.command == "predict":
        return predict.run(args)

    from fcnkit import training

    try:
        metrics = training.train(
            dataset=args.dataset, model=args.model, epochs=args.epochs,
            out=args.out, resume=args.resume, crop_size=args.crop_size,
            batch_size=args.batch_size, steps_per_epoch=args.steps_per_epoch,
            learning_rate=args.learning_rate, depth=args.depth,
            filters=args.filters, batch_norm=args.batch_norm, seed=args.seed,
            verbose=args.verbose, loss=args.loss, weight_map=args.weight_map,
            mixed_precision=args.mixed_precision, jit_compile=args.jit_compile,
            strategy=args.strategy,
        )
    except (TypeError, ValueError) as error:  # options checked before anything is written
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(metrics, indent=2))
    print(f"Wrote {args.out}/: model.keras, history.csv, metrics.json, report.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
