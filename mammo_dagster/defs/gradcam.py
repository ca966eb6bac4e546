"""Grad-CAM heatmaps for the images the current model flags."""

import dagster as dg
import numpy as np
from PIL import Image

from mammo_dagster.core.imaging import preprocess
from mammo_dagster.core.imaging.batch import thumbnail_name
from mammo_dagster.core.model.modelstore import ModelCard, model_dir, read_current
from mammo_dagster.core.store import queries

from .markdown import md_image, png_bytes
from .model import image_predictions
from .resources import MammoHome, StoreResource


class GradcamConfig(dg.Config):
    limit: int = 48  # flagged images, most confident first


@dg.asset(group_name="model", deps=[image_predictions], kinds={"pytorch"})
def gradcam(config: GradcamConfig, paths: MammoHome, store: StoreResource) -> dg.MaterializeResult:
    """Where the current model looked, for each flag it raised: overlays in
    `gradcam/<version>/<SOPInstanceUID>_<frame>_<flag>.png` (the labeler's review mode
    shows them)."""
    from mammo_dagster.core.model.gradcam import cam_file, cam_folder, load_torch_model, write_cam

    home = paths.data
    current = read_current(home.models)
    if current is None:
        raise dg.Failure("no current model: materialize onnx_model first")
    folder = model_dir(home.models, current.version)
    shipped = load_torch_model(folder)
    size = ModelCard.read(folder).input_size
    rows = queries.flagged_images(store.store(), current.version, config.limit)
    made = []
    for sop, frame, biopsy, mag, *_ in rows:
        thumb = home.thumbnails / thumbnail_name(sop, frame)
        if not thumb.exists():
            continue
        for flag, raised in zip(preprocess.FLAGS, (biopsy, mag), strict=True):
            if raised:
                dest = cam_file(home, current.version, sop, frame, flag)
                made.append(write_cam(shipped, size, thumb, flag, dest))
    out_dir = cam_folder(home, current.version)
    sheet = ""
    if made:
        tiles = [np.asarray(Image.open(p).resize((160, 160))) for p in made[:6]]
        sheet = md_image(png_bytes(Image.fromarray(np.hstack(tiles))), "examples")
    return dg.MaterializeResult(
        metadata={
            "model_version": current.version,
            "heatmaps": len(made),
            "folder": dg.MetadataValue.path(str(out_dir)),
            "examples": dg.MetadataValue.md(sheet or "(no flagged images)"),
        }
    )
