# Every lab module: lab.machine, services.labd, services.lab-broker,
# services.lab-controller.
{
  imports = [ ./machine.nix ./labd.nix ./broker.nix ./controller.nix ];
}
