"""The start-up model summary, without FLOPs that were never measured.

Lightning's ``ModelSummary`` counts FLOPs only by running the module's ``example_input_array``. An
alignment module has none (its input is a typed batch of pairs or rollouts), so Lightning printed a
column of zeros and ``Total FLOPs: 0`` at every fit: a number that is not true. This summary leaves
both out in that case and is otherwise Lightning's (a rich table when ``rich`` is installed).
The CLI installs it in place of Lightning's default (``AlignCLI._instantiate_trainer``).
"""

from __future__ import annotations

import logging
from typing import Any

from lightning.pytorch.callbacks import ModelSummary as LightningModelSummary
from lightning.pytorch.callbacks import RichModelSummary
from lightning.pytorch.utilities.imports import _RICH_AVAILABLE
from lightning.pytorch.utilities.model_summary.model_summary import _format_summary_table, get_formatted_model_size, get_human_readable_count

log = logging.getLogger("lightning.pytorch.callbacks.model_summary")
FLOPS_COLUMN = "FLOPs"


class ModelSummary(LightningModelSummary):
    """Lightning's model summary; the FLOPs column and total appear only when FLOPs were measured."""

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        lightning_summary = RichModelSummary if _RICH_AVAILABLE else LightningModelSummary
        if total_flops:  # a module with example_input_array: Lightning's own summary is true
            lightning_summary.summarize(summary_data, total_parameters, trainable_parameters, model_size, total_training_modes, total_flops, **summarize_kwargs)
            return
        columns = [column for column in summary_data if column[0] != FLOPS_COLUMN]
        totals = [
            ("Trainable params", get_human_readable_count(int(trainable_parameters))),
            ("Non-trainable params", get_human_readable_count(int(total_parameters - trainable_parameters))),
            ("Total params", get_human_readable_count(int(total_parameters))),
            ("Total estimated model params size (MB)", get_formatted_model_size(model_size)),
            ("Modules in train mode", str(total_training_modes["train"])),
            ("Modules in eval mode", str(total_training_modes["eval"])),
        ]
        if _RICH_AVAILABLE:
            _print_rich(columns, totals, summarize_kwargs.get("header_style", "bold magenta"))
        else:
            table = _format_summary_table(total_parameters, trainable_parameters, model_size, total_training_modes, total_flops, *columns)
            log.info("\n" + table.rsplit("\n", 1)[0])  # its last line is the FLOPs total


def _print_rich(columns: list[tuple[str, list[str]]], totals: list[tuple[str, str]], header_style: str) -> None:
    from rich import get_console
    from rich.table import Table

    table = Table(header_style=header_style)
    for name, _ in columns:
        style = {"": "dim"}.get(name.strip(), None)
        table.add_column(name, justify="right" if name.startswith(("Params", "In sizes", "Out sizes")) else "left", style=style, no_wrap=name == "Name")
    for row in zip(*(values for _, values in columns)):
        table.add_row(*row)
    grid = Table.grid(expand=True)
    grid.add_column()
    for label, value in totals:
        grid.add_row(f"[bold]{label}[/]: {value}")
    console = get_console()
    console.print(table)
    console.print(grid)
