// The sandbox ("pause") process of the test node's Pods; built by scripts/k8s-node.
module promptops.local/k8s-test-env/pause

go 1.23.0
