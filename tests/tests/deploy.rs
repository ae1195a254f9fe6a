//! The deployment files in deploy/ are valid: the Kubernetes manifests against the Kubernetes schemas
//! (kubernetes-validate, strict), the systemd units with systemd-analyze, and all of them, with the
//! compose file, against what the binaries read (tests/python/check_deploy.py).

use std::process::Command;

use moetune_e2e::{repo_path, run_ok};

#[test]
fn kubernetes_manifests_validate_strictly() {
    let manifests: Vec<String> = std::fs::read_dir(repo_path("deploy/k8s"))
        .unwrap()
        .map(|entry| entry.unwrap().path().display().to_string())
        .filter(|path| path.ends_with(".yaml"))
        .collect();
    assert!(manifests.len() >= 5, "{manifests:?}");
    // kubernetes-validate is in the test venv, first on PATH under deploy/test.
    run_ok(Command::new("kubernetes-validate").args(["--strict", "--quiet"]).args(&manifests));
}

#[test]
fn deploy_files_name_only_real_settings_and_wire_everything() {
    run_ok(Command::new("python3").arg(repo_path("tests/python/check_deploy.py")));
}

/// systemd-analyze checks the units as systemd would load them; their binaries are swapped for stubs
/// in a temporary directory, since verify insists the ExecStart program exists.
#[test]
fn systemd_units_verify() {
    let dir = std::env::temp_dir().join(format!("moetune-units-{}", std::process::id()));
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for name in ["moetune-api", "moetune-scheduler", "moetune-runner"] {
        let stub = bin.join(name);
        std::fs::write(&stub, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&stub, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let mut units = Vec::new();
    for entry in std::fs::read_dir(repo_path("deploy/systemd")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap().replace("/usr/local/bin/", &format!("{}/", bin.display()));
        // A template unit is verified as one of its instances.
        let name = path.file_name().unwrap().to_string_lossy().replace("@.service", "@gpu0.service");
        std::fs::write(dir.join(&name), text).unwrap();
        units.push(dir.join(name));
    }
    assert_eq!(units.len(), 3);
    let output = Command::new("systemd-analyze").args(["verify", "--man=no"]).args(&units).output().expect("systemd-analyze runs");
    let complaints = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(output.status.success() && complaints.trim().is_empty(), "systemd-analyze: {complaints}");
    std::fs::remove_dir_all(&dir).unwrap();
}
