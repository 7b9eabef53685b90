# Bakes a markco runtime-host AMI: Ubuntu 24.04 (noble) from Canonical, provisioned by provision.sh
# (the same script cloud-init runs and test/integration/runtime-host-recipe.test.ts exercises).
#
#   packer init infra/runtime-host/runtime-host.pkr.hcl
#   packer build -var region=ca-central-1 -var image_archive=https://…/markco-runtime.tar \
#     infra/runtime-host/runtime-host.pkr.hcl
#
# No ssh key is baked in: the control plane's launch UserData gives each instance its host key and the
# workers' authorised key (activities/cloud-init.ts). docs/runtime-host.md has the whole procedure.
packer {
  required_plugins {
    amazon = {
      version = ">= 1.3.0"
      source  = "github.com/hashicorp/amazon"
    }
  }
}

variable "region" {
  type    = string
  default = "ca-central-1"
}

variable "instance_type" {
  type    = string
  default = "t3.medium"
}

variable "arch" {
  type    = string
  default = "amd64"
}

# `podman save` archive of the runtime images (localhost/markco-runtime:<version>, and the GPU image for a
# g5 AMI): an http(s) URL the build instance can fetch (an S3 presigned URL), or empty to bake no images.
variable "image_archive" {
  type    = string
  default = ""
}

variable "ami_name_prefix" {
  type    = string
  default = "markco-runtime-host"
}

variable "subnet_id" {
  type    = string
  default = ""
}

source "amazon-ebs" "runtime_host" {
  region        = var.region
  instance_type = var.instance_type
  ssh_username  = "ubuntu"
  subnet_id     = var.subnet_id == "" ? null : var.subnet_id
  ami_name      = "${var.ami_name_prefix}-${formatdate("YYYYMMDD-hhmmss", timestamp())}"
  source_ami_filter {
    filters = {
      name                = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-${var.arch}-server-*"
      root-device-type    = "ebs"
      virtualization-type = "hvm"
    }
    owners      = ["099720109477"] # Canonical
    most_recent = true
  }
  launch_block_device_mappings {
    device_name           = "/dev/sda1"
    volume_size           = 30
    volume_type           = "gp3"
    delete_on_termination = true
  }
  tags = {
    "markco:role"    = "runtime-host-ami"
    "markco:recipe"  = "infra/runtime-host/provision.sh"
  }
}

build {
  sources = ["source.amazon-ebs.runtime_host"]

  provisioner "shell" {
    script          = "${path.root}/provision.sh"
    execute_command = "sudo -n env {{ .Vars }} /bin/sh '{{ .Path }}'"
    environment_vars = [
      "MARKCO_IMAGE_ARCHIVES=${var.image_archive}",
    ]
  }

  # The baked host keys and the build's login key must not ship in the AMI: cloud-init gives every instance its own.
  provisioner "shell" {
    inline = [
      "sudo -n rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub /home/ubuntu/.ssh/authorized_keys /root/.ssh/authorized_keys",
      "sudo -n rm -f /var/lib/markco/images/*.tar",
      "sudo -n cloud-init clean --logs",
    ]
  }
}
