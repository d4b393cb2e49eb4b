"""timm backbones: ``create_backbone``, alexnet_bn and RotNet's NIN (``nin_3block`` ..
``nin_5block``) registered into timm, named stages."""

from sslpipe.models.backbone import check_arch, create_backbone, load_backbone_weights
from sslpipe.models.stages import freeze_until, resolve_stage, stage_names

__all__ = ["check_arch", "create_backbone", "freeze_until", "load_backbone_weights",
           "resolve_stage", "stage_names"]
