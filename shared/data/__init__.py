"""Data layer: every loader turns a site's files into an :class:`ImageSet` or raises a
:class:`DataValidationError` naming the file or field at fault."""

from .dicom import load_dicom_folder, load_dicom_series, read_dicom_image
from .imagefolder import load_image_folder
from .medmnist import load_medmnist
from .nifti import load_nifti, load_nifti_pairs
from .partition import partition_indices
from .sources import load_site_data
from .types import DataValidationError, ImageSet

__all__ = [
    "DataValidationError",
    "ImageSet",
    "load_dicom_folder",
    "load_dicom_series",
    "load_image_folder",
    "load_medmnist",
    "load_nifti",
    "load_nifti_pairs",
    "load_site_data",
    "partition_indices",
    "read_dicom_image",
]
