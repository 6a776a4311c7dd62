"""The benchmark's figures as the lines a person reads."""

from __future__ import annotations


def report(result: dict) -> str:
    lines = [
        f"device {result['device']}, {result['threads']} threads, batch {result['batch_size']}, "
        f"precision {result['precision']}, channels_last {result['channels_last']}, compile {result['compile']}",
        f"(a) data pipeline        {result['data_img_s']:>10,.0f} img/s",
        f"(b) bare PyTorch loop    {result['bare_img_s']:>10,.0f} img/s",
        f"(c) Lightning fit        {result['fit_img_s']:>10,.0f} img/s   (default callbacks and logger; "
        f"epoch-end reports {result['epoch_end_callbacks_s']:.2f} s once per epoch)",
        f"    evaluation           {result['eval_img_s']:>10,.0f} img/s",
        f"    one GradCAM figure   {result['gradcam_figure_s'] or 0:>10.2f} s",
    ]
    if result["teacher_img_s"]:
        lines.append(
            f"    teacher forward      {result['teacher_img_s']:>10,.0f} img/s   (module.teacher, once per training "
            f"step: {result['bare_img_s'] / result['teacher_img_s']:.2f} of a bare step's time)"
        )
    lines += [
        f"(c)/(b) = {result['fit_over_bare']:.3f}   (the fit's speed against the bare loop's)",
        f"(a)/(b) = {result['data_over_bare']:.1f}    (how much faster the data comes than it is used)",
        f"estimated epoch ({result['epoch_images'][0]:,} train + {result['epoch_images'][1]:,} test): "
        f"{result['epoch_s_estimate']:.1f} s",
        f"peak memory: {result['peak_memory_mb']:,.0f} MB",
    ]
    if result["epoch_s_measured"]:
        epochs = result["epoch_s_measured"]
        lines.insert(
            -1,
            f"measured epochs (real fit, {result['epoch_images'][0]:,} train + {result['epoch_images'][1]:,} validation "
            f"images each): {', '.join(f'{e:.1f}' for e in epochs)} s"
            + (
                f"; after the first: {sorted(epochs[1:])[len(epochs[1:]) // 2]:.1f} s (median)"
                if len(epochs) > 1
                else ""
            ),
        )
    return "\n".join(lines)
